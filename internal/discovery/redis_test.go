package discovery_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/testutil/redistest"
)

var prefixSeq atomic.Int64

// newRedis returns a Redis registry on url with a key prefix of its own.
func newRedis(t testing.TB, url string) (*discovery.Redis, redis.UniversalClient) {
	t.Helper()
	opts, err := discovery.ParseRedisURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewUniversalClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reg, err := discovery.NewRedis(ctx, discovery.RedisOptions{
		Client: c,
		Prefix: fmt.Sprintf("t%d-%d", time.Now().UnixNano()%1e6, prefixSeq.Add(1)),
	})
	if err != nil {
		_ = c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	return reg, c
}

func redisHarness(url string) func(t *testing.T) harness {
	return func(t *testing.T) harness {
		reg, _ := newRedis(t, url)
		return harness{reg: reg, advance: time.Sleep, shortTTL: time.Second}
	}
}

func TestRedisConformance(t *testing.T) {
	srv := redistest.Start(t)
	testConformance(t, redisHarness("redis://"+srv.Addr()+"/0"))
}

// TestRedisKeys checks the key layout and that every Put sets the TTL anew.
func TestRedisKeys(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	reg, c := newRedis(t, "redis://"+srv.Addr())
	rec := discovery.RandRecord(rand.New(rand.NewPCG(1, 1)))
	rec.Sent = time.UnixMilli(1_800_000_000_000)
	if err := reg.Put(ctx, rec, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	a := rec.ID.OverlayAddr().As16()
	var recKey string
	for _, k := range keys {
		if strings.HasSuffix(k, fmt.Sprintf(":{%x}:p", a[2:])) {
			recKey = k
		}
	}
	if recKey == "" || len(keys) != 2 {
		t.Fatalf("keys %q: want one record key tagged with the address and one counter", keys)
	}
	if ttl := c.PTTL(ctx, recKey).Val(); ttl <= 9*time.Second || ttl > 10*time.Second {
		t.Fatalf("PTTL after Put with 10s = %v", ttl)
	}
	rec.Sent = rec.Sent.Add(time.Second) // a refresh is a newer Register
	if err := reg.Put(ctx, rec, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if ttl := c.PTTL(ctx, recKey).Val(); ttl <= 29*time.Second {
		t.Fatalf("PTTL after refresh with 30s = %v", ttl)
	}
	// A value this build cannot read is a bad record, not an outage.
	if err := c.Set(ctx, recKey, "\x09garbage", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Get(ctx, rec.ID); !errors.Is(err, discovery.ErrBadRecord) || errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("Get of a garbled value: %v", err)
	}
}

// TestRedisPutIfNewerOverOldRecords: the conditional put script reads the
// send time from the bytes the codec writes, and a record as a previous
// version wrote it with a plain SET (1.1, without a send time; 1.0,
// without home either) is replaced by a Put with one (a rolling upgrade).
// A Redis that lost the script (SCRIPT FLUSH, a restart) still gets it.
func TestRedisPutIfNewerOverOldRecords(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	reg, c := newRedis(t, "redis://"+srv.Addr())
	r := rand.New(rand.NewPCG(9, 9))
	for i := range 30 {
		rec := discovery.RandRecord(r)
		rec.Home = netip.MustParseAddrPort("10.0.0.1:3490") // 7 bytes stored
		sent := time.UnixMilli(1_800_000_000_000 + int64(i)*1000)
		rec.Sent = sent
		full, err := discovery.AppendRecord(nil, rec)
		if err != nil {
			t.Fatal(err)
		}
		a := rec.ID.OverlayAddr().As16()
		if i%3 == 0 {
			if err := c.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		// Written by this version: an equal send time is refused.
		if err := reg.Put(ctx, rec, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := reg.Put(ctx, rec, time.Minute); !errors.Is(err, discovery.ErrNotNewer) {
			t.Fatalf("record %d: Put of the stored send time: %v, want ErrNotNewer", i, err)
		}
		keys, err := c.Keys(ctx, fmt.Sprintf("*:{%x}:p", a[2:])).Result()
		if err != nil || len(keys) != 1 {
			t.Fatalf("record keys %q, %v", keys, err)
		}
		for _, old := range [][]byte{full[:len(full)-8], full[:len(full)-8-7]} {
			if err := c.Set(ctx, keys[0], old, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			if got, err := reg.Get(ctx, rec.ID); err != nil || !got.Sent.IsZero() {
				t.Fatalf("record %d in an older form: %+v, %v", i, got, err)
			}
			if err := reg.Put(ctx, rec, time.Minute); err != nil {
				t.Fatalf("record %d: Put over the older form (%d bytes): %v", i, len(old), err)
			}
			if got, err := reg.Get(ctx, rec.ID); err != nil || !discovery.SameRecord(got, rec) {
				t.Fatalf("record %d after the Put over the older form: %+v, %v", i, got, err)
			}
		}
		// Truncated and garbled values: the script refuses exactly when
		// the codec's walk finds a send time not earlier.
		for j := range 20 {
			bad := bytes.Clone(full)
			if j%2 == 0 {
				bad = bad[:r.IntN(len(bad))]
			} else {
				bad[r.IntN(len(bad))] ^= byte(1 + r.IntN(255))
			}
			probe := rec
			probe.Sent = sent.Add(time.Duration(r.IntN(3)-1) * time.Millisecond)
			if err := c.Set(ctx, keys[0], bad, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			err := reg.Put(ctx, probe, time.Minute)
			if want := discovery.RecordSent(bad) >= probe.Sent.UnixMilli(); errors.Is(err, discovery.ErrNotNewer) != want || (!want && err != nil) {
				t.Fatalf("record %d, value %x: Put sent %d over a stored sent %d: %v", i, bad, probe.Sent.UnixMilli(), discovery.RecordSent(bad), err)
			}
		}
	}
}

// TestRedisOutage stops Redis under a live registry: every call fails with
// ErrUnavailable (quickly), and after a restart the same client serves again.
func TestRedisOutage(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	reg, _ := newRedis(t, "redis://"+srv.Addr())
	r := rand.New(rand.NewPCG(2, 2))
	rec := discovery.RandRecord(r)
	if err := reg.Put(ctx, rec, time.Minute); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	calls := map[string]func(context.Context) error{
		"Put":       func(ctx context.Context) error { return reg.Put(ctx, rec, time.Minute) },
		"Get":       func(ctx context.Context) error { _, err := reg.Get(ctx, rec.ID); return err },
		"GetByAddr": func(ctx context.Context) error { _, err := reg.GetByAddr(ctx, rec.ID.OverlayAddr()); return err },
		"Delete":    func(ctx context.Context) error { return reg.Delete(ctx, rec.ID) },
		"Len":       func(ctx context.Context) error { _, err := reg.Len(ctx); return err },
		"Ping":      func(ctx context.Context) error { return reg.Ping(ctx) },
	}
	for name, call := range calls {
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := call(cctx)
		cancel()
		if !errors.Is(err, discovery.ErrUnavailable) || errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("%s while Redis is down: %v, want ErrUnavailable", name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("%s took %v to fail", name, d)
		}
		t.Logf("%s while down: failed in %v", name, time.Since(start).Round(time.Millisecond))
	}

	srv.Restart()
	// The client's pool stops dialling after repeated failures and probes
	// once a second in the background, so service resumes within about a
	// second. The data is gone (soft state): the peer registers again.
	restarted := time.Now()
	attempts := 0
	for {
		attempts++
		err := reg.Put(ctx, rec, time.Minute)
		if err == nil {
			var got discovery.Record
			got, err = reg.Get(ctx, rec.ID)
			if err == nil && !discovery.SameRecord(got, rec) {
				t.Fatalf("Get after restart returned %+v", got)
			}
		}
		if err == nil {
			err = reg.Ping(ctx)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, discovery.ErrUnavailable) {
			t.Fatalf("after restart: %v", err)
		}
		if time.Since(restarted) > 5*time.Second {
			t.Fatalf("service did not resume within 5s of the restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("service resumed %v after the restart (%d attempts)", time.Since(restarted).Round(time.Millisecond), attempts)
}

// TestRedisCluster runs the registry on a three-master Redis Cluster: every
// command of every operation stays within one slot, and peers spread over
// all masters.
func TestRedisCluster(t *testing.T) {
	ctx := context.Background()
	cl := redistest.StartCluster(t, 3)
	url := "redis-cluster://" + strings.Join(cl.Addrs(), ",")

	t.Run("Conformance", func(t *testing.T) { testConformance(t, redisHarness(url)) })

	t.Run("Spread", func(t *testing.T) {
		reg, c := newRedis(t, url)
		if _, ok := c.(*redis.ClusterClient); !ok {
			t.Fatalf("%s gave a %T, want a cluster client", url, c)
		}
		r := rand.New(rand.NewPCG(3, 3))
		const n = 300
		recs := make([]discovery.Record, n)
		for i := range recs {
			recs[i] = discovery.RandRecord(r)
			if err := reg.Put(ctx, recs[i], time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		for _, rec := range recs {
			if got, err := reg.GetByAddr(ctx, rec.ID.OverlayAddr()); err != nil || !discovery.SameRecord(got, rec) {
				t.Fatalf("GetByAddr on the cluster: %v", err)
			}
		}
		if got, err := reg.Len(ctx); err != nil || got < n*97/100 || got > n*103/100 {
			t.Fatalf("Len = %d, %v; want about %d", got, err, n)
		}
		for _, s := range cl.Nodes {
			c := redis.NewClient(&redis.Options{Addr: s.Addr()})
			keys := c.DBSize(ctx).Val()
			_ = c.Close()
			if keys < n/10 {
				t.Fatalf("node %s holds %d keys of %d peers: not spread", s.Addr(), keys, n)
			}
		}
		for _, rec := range recs {
			if err := reg.Delete(ctx, rec.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := reg.Get(ctx, rec.ID); !errors.Is(err, discovery.ErrNotFound) {
				t.Fatalf("Get after Delete: %v", err)
			}
		}
	})
}

// TestRedisEpoch: the Redis registry's epoch stays while Redis keeps its
// data (every instance reads the same one) and changes when Redis lost it.
func TestRedisEpoch(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	reg, c := newRedis(t, "redis://"+srv.Addr())
	e1, err := reg.Epoch(ctx)
	if err != nil || e1 == 0 {
		t.Fatalf("first epoch %x, %v", e1, err)
	}
	if e2, err := reg.Epoch(ctx); err != nil || e2 != e1 {
		t.Fatalf("epoch changed with the data kept: %x -> %x (%v)", e1, e2, err)
	}
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if e3, err := reg.Epoch(ctx); err != nil || e3 == 0 || e3 == e1 {
		t.Fatalf("epoch after Redis lost its data: %x -> %x (%v), want a new one", e1, e3, err)
	}
}
