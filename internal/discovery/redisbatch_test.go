package discovery_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/testutil/redistest"
)

// commandCalls returns how many times Redis ran each command (INFO
// commandstats), by lower-case name.
func commandCalls(t *testing.T, ctx context.Context, c redis.UniversalClient) map[string]int {
	t.Helper()
	info, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]int{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				calls[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.Atoi(v)
			}
		}
	}
	return calls
}

// pauseWrites makes Redis hold every write command for d (CLIENT PAUSE
// WRITE, Redis 6.2 or later), as a Redis busy with other clients would.
func pauseWrites(t *testing.T, ctx context.Context, c redis.UniversalClient, d time.Duration) {
	t.Helper()
	if err := c.Do(ctx, "CLIENT", "PAUSE", d.Milliseconds(), "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
}

// TestRedisPutsBatch: Puts that arrive while earlier ones are being written
// are written together, with one count update per count shard and batch
// instead of one per Put (and, with a cap, one expiry index update), and
// each still gets its own answer: the records
// all read back, and a Put whose deadline passes while it waits fails with
// ErrUnavailable without holding up the others.
func TestRedisPutsBatch(t *testing.T) {
	srv := redistest.Start(t)
	for _, capped := range []bool{false, true} {
		t.Run("capped="+strconv.FormatBool(capped), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			opts, err := discovery.ParseRedisURL("redis://" + srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			c := redis.NewUniversalClient(opts)
			const n = 1000
			limit := 0
			if capped {
				limit = 16 * 16
			}
			reg, err := discovery.NewRedis(ctx, discovery.RedisOptions{Client: c, Prefix: "batch" + strconv.FormatBool(capped), MaxRecords: limit})
			if err != nil {
				_ = c.Close()
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = reg.Close() })
			if err := c.ConfigResetStat(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(7, 7))
			recs := make([]discovery.Record, n)
			for i := range recs {
				recs[i] = discovery.RandRecord(r)
			}

			// Redis holds writes while every Put queues.
			pauseWrites(t, ctx, c, 500*time.Millisecond)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range recs {
				wg.Go(func() {
					pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					defer cancel()
					errs[i] = reg.Put(pctx, recs[i], time.Minute)
				})
			}
			// One caller gives up while its Put waits behind the pause.
			short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
			late := discovery.RandRecord(r)
			err = reg.Put(short, late, time.Minute)
			cancelShort()
			if !errors.Is(err, discovery.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Put past its deadline: %v, want ErrUnavailable and DeadlineExceeded", err)
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("Put %d: %v", i, err)
				}
			}

			calls := commandCalls(t, ctx, c)
			if calls["set"] < n {
				t.Fatalf("%d SETs for %d Puts", calls["set"], n)
			}
			// Without batching every Put would count itself: n PFADDs.
			if calls["pfadd"] > n/10 {
				t.Fatalf("%d PFADDs for %d Puts, want them merged per batch", calls["pfadd"], n)
			}
			// With a cap, the expiry index is kept by one ZADD per shard
			// and batch too.
			if capped && (calls["zadd"] == 0 || calls["zadd"] > n/10) {
				t.Fatalf("%d ZADDs for %d Puts, want one per shard and batch", calls["zadd"], n)
			}
			t.Logf("%d Puts: %d SETs, %d PFADDs, %d PEXPIREs, %d ZADDs", n, calls["set"], calls["pfadd"], calls["pexpire"], calls["zadd"])

			if !capped {
				for _, rec := range recs {
					got, err := reg.Get(ctx, rec.ID)
					if err != nil || !discovery.SameRecord(got, rec) {
						t.Fatalf("Get after a batched Put: %v", err)
					}
				}
				if got, err := reg.Len(ctx); err != nil || got < n*97/100 || got > n*103/100 {
					t.Fatalf("Len = %d, %v; want about %d", got, err, n)
				}
				return
			}
			keys, err := c.Keys(ctx, "batchtrue:*}:p").Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) > limit {
				t.Fatalf("%d records beyond the cap %d after a batch", len(keys), limit)
			}
			if int(reg.Evicted())+len(keys) < n {
				t.Fatalf("%d evicted, %d kept of %d", reg.Evicted(), len(keys), n)
			}
		})
	}
}
