package discovery_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/testutil/redistest"
)

// capFlood is issue 10 item 7: registrations of ever new keys grew the
// registry without bound. It puts flood new records while one peer keeps
// refreshing, and checks that the refresh never fails, the peer stays, the
// newest record is kept and the evictions were counted.
func capFlood(t *testing.T, reg discovery.Registry, advance func(time.Duration), flood int) {
	t.Helper()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(7, 7))
	steady := discovery.RandRecord(r)
	const ttl = time.Minute
	if err := reg.Put(ctx, steady, ttl); err != nil {
		t.Fatal(err)
	}
	var last discovery.Record
	for i := range flood {
		advance(time.Millisecond)
		last = discovery.RandRecord(r)
		if err := reg.Put(ctx, last, ttl); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		if i%50 == 0 {
			if err := reg.Put(ctx, steady, ttl); err != nil {
				t.Fatalf("refresh of a registered peer refused: %v", err)
			}
		}
	}
	if _, err := reg.Get(ctx, steady.ID); err != nil {
		t.Fatalf("the refreshing peer was evicted: %v", err)
	}
	if _, err := reg.Get(ctx, last.ID); err != nil {
		t.Fatalf("the newest record was evicted: %v", err)
	}
}

func TestMemoryCap(t *testing.T) {
	clk := discovery.NewFakeClock()
	m := discovery.NewMemory(clk.Now)
	const limit = 256 * 4
	m.SetMaxRecords(limit)
	capFlood(t, m, clk.Add, 20*limit)
	if n, _ := m.Len(context.Background()); n > limit {
		t.Fatalf("Len = %d beyond the cap %d", n, limit)
	}
	if m.Evicted() == 0 {
		t.Fatal("no eviction counted")
	}
}

func TestRedisCap(t *testing.T) {
	srv := redistest.Start(t)
	opts, err := discovery.ParseRedisURL("redis://" + srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewUniversalClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const limit = 16 * 8
	clk := discovery.NewFakeClock()
	reg, err := discovery.NewRedis(ctx, discovery.RedisOptions{Client: c, Prefix: "cap", MaxRecords: limit, Now: clk.Now})
	if err != nil {
		_ = c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	capFlood(t, reg, clk.Add, 10*limit)
	keys, err := c.Keys(ctx, "cap:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	records := 0
	for _, k := range keys {
		if strings.HasSuffix(k, "}:p") {
			records++
		}
	}
	if records > limit {
		t.Fatalf("%d records in Redis beyond the cap %d", records, limit)
	}
	if reg.Evicted() == 0 {
		t.Fatal("no eviction counted")
	}
}

// The shared behaviour holds with a cap far above what the tests store
// (every Put then also runs the cap's bookkeeping).
func TestMemoryConformanceCapped(t *testing.T) {
	testConformance(t, func(t *testing.T) harness {
		clk := discovery.NewFakeClock()
		m := discovery.NewMemory(clk.Now)
		m.SetMaxRecords(1 << 20)
		t.Cleanup(func() { _ = m.Close() })
		return harness{reg: m, advance: clk.Add, shortTTL: 30 * time.Second, lenExact: true}
	})
}

func TestRedisConformanceCapped(t *testing.T) {
	srv := redistest.Start(t)
	testConformance(t, func(t *testing.T) harness {
		opts, err := discovery.ParseRedisURL("redis://" + srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c := redis.NewUniversalClient(opts)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		reg, err := discovery.NewRedis(ctx, discovery.RedisOptions{
			Client: c, Prefix: fmt.Sprintf("capc%d", prefixSeq.Add(1)), MaxRecords: 1 << 20,
		})
		if err != nil {
			_ = c.Close()
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = reg.Close() })
		return harness{reg: reg, advance: time.Sleep, shortTTL: time.Second}
	})
}
