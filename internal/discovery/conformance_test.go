package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
)

// longTTL outlives every conformance test.
const longTTL = time.Minute

// harness is one registry under test with its notion of time.
type harness struct {
	reg discovery.Registry
	// advance lets d pass: a fake clock for Memory, a sleep for Redis.
	advance func(d time.Duration)
	// shortTTL is the TTL of the expiry tests: advance(shortTTL/3) must
	// leave a wide margin before it runs out. Other tests use a minute.
	shortTTL time.Duration
	// lenExact says Len counts exactly (Memory) rather than estimating
	// peers registered recently, deleted ones included (Redis).
	lenExact bool
}

// testConformance runs the behaviour every Registry shares. newHarness gives
// each subtest an empty registry; the subtests run in parallel (so Redis's
// real-time waits overlap).
func testConformance(t *testing.T, newHarness func(t *testing.T) harness) {
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := func() *rand.Rand { return rand.New(rand.NewPCG(seed, 1)) }

	t.Run("PutGet", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		r := rng()
		var recs []discovery.Record
		for range 50 {
			rec := discovery.RandRecord(r)
			recs = append(recs, rec)
			if err := h.reg.Put(ctx, rec, longTTL); err != nil {
				t.Fatal(err)
			}
		}
		for _, rec := range recs {
			got, err := h.reg.Get(ctx, rec.ID)
			if err != nil {
				t.Fatalf("Get(%v): %v", rec.ID.Short(), err)
			}
			if !discovery.SameRecord(got, rec) {
				t.Fatalf("Get: got %+v, want %+v", got, rec)
			}
			got, err = h.reg.GetByAddr(ctx, rec.ID.OverlayAddr())
			if err != nil {
				t.Fatalf("GetByAddr(%v): %v", rec.ID.OverlayAddr(), err)
			}
			if !discovery.SameRecord(got, rec) {
				t.Fatalf("GetByAddr: got %+v, want %+v", got, rec)
			}
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		r := rng()
		rec := discovery.RandRecord(r)
		if _, err := h.reg.Get(ctx, rec.ID); !errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("Get of unknown peer: %v", err)
		}
		if _, err := h.reg.GetByAddr(ctx, rec.ID.OverlayAddr()); !errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("GetByAddr of unknown peer: %v", err)
		}
		if err := h.reg.Put(ctx, rec, longTTL); err != nil {
			t.Fatal(err)
		}
		for _, a := range []string{"198.51.100.1", "::1", "fd4c::1", "fd4b::1"} {
			if _, err := h.reg.GetByAddr(ctx, netip.MustParseAddr(a)); !errors.Is(err, discovery.ErrNotFound) {
				t.Fatalf("GetByAddr(%s): %v", a, err)
			}
		}
		if errors.Is(discovery.ErrNotFound, discovery.ErrUnavailable) {
			t.Fatal("not found must differ from unavailable")
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		rec := discovery.RandRecord(rng())
		if err := h.reg.Put(ctx, rec, 0); !errors.Is(err, discovery.ErrInvalid) {
			t.Fatalf("Put with ttl 0: %v", err)
		}
		rec.ID = crypto.PeerID{}
		if err := h.reg.Put(ctx, rec, longTTL); !errors.Is(err, discovery.ErrInvalid) {
			t.Fatalf("Put with zero ID: %v", err)
		}
	})

	t.Run("Expiry", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		rec := discovery.RandRecord(rng())
		if err := h.reg.Put(ctx, rec, h.shortTTL); err != nil {
			t.Fatal(err)
		}
		h.advance(h.shortTTL / 3)
		if _, err := h.reg.Get(ctx, rec.ID); err != nil {
			t.Fatalf("Get before expiry: %v", err)
		}
		h.advance(h.shortTTL)
		if _, err := h.reg.Get(ctx, rec.ID); !errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("Get after expiry: %v", err)
		}
		if _, err := h.reg.GetByAddr(ctx, rec.ID.OverlayAddr()); !errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("GetByAddr after expiry: %v", err)
		}
	})

	t.Run("Refresh", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		r := rng()
		rec := discovery.RandRecord(r)
		if err := h.reg.Put(ctx, rec, h.shortTTL); err != nil {
			t.Fatal(err)
		}
		// Refresh twice, each before the previous expiry, with new
		// addresses; the record lives past its first TTL and carries the
		// newest content.
		for i := range 2 {
			h.advance(h.shortTTL * 2 / 3)
			rec2 := discovery.RandRecord(r)
			rec2.ID = rec.ID
			rec2.Sent = time.UnixMilli(1_900_000_000_000 + int64(i)) // each newer
			rec = rec2
			if err := h.reg.Put(ctx, rec, h.shortTTL); err != nil {
				t.Fatal(err)
			}
		}
		h.advance(h.shortTTL / 3)
		got, err := h.reg.Get(ctx, rec.ID)
		if err != nil {
			t.Fatalf("Get after refreshes, past the first TTL: %v", err)
		}
		if !discovery.SameRecord(got, rec) {
			t.Fatalf("got %+v, want the refreshed %+v", got, rec)
		}
		h.advance(h.shortTTL)
		if _, err := h.reg.Get(ctx, rec.ID); !errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("Get after the last TTL: %v", err)
		}
		// An expired peer can register again.
		if err := h.reg.Put(ctx, rec, h.shortTTL); err != nil {
			t.Fatal(err)
		}
		if _, err := h.reg.Get(ctx, rec.ID); err != nil {
			t.Fatalf("Get after re-registration: %v", err)
		}
	})

	// A Put with a send time replaces only a record with an earlier one
	// or none: a Register replayed to another instance (equal time), or
	// overtaken by a newer one (earlier time), leaves the record alone.
	t.Run("NotNewer", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		r := rng()
		expect := func(id crypto.PeerID, want discovery.Record, what string) {
			t.Helper()
			got, err := h.reg.Get(ctx, id)
			if err != nil || !discovery.SameRecord(got, want) {
				t.Fatalf("after %s: %v\n got %+v\nwant %+v", what, err, got, want)
			}
		}
		put := func(base discovery.Record, sent time.Time) (discovery.Record, error) {
			rec := discovery.RandRecord(r)
			rec.ID, rec.Sent = base.ID, sent
			return rec, h.reg.Put(ctx, rec, longTTL)
		}
		for range 20 { // random record shapes: the stored one is parsed
			rec := discovery.RandRecord(r)
			sent := time.UnixMilli(1_800_000_000_000 + r.Int64N(1e9)).UTC()
			rec.Sent = sent
			if err := h.reg.Put(ctx, rec, longTTL); err != nil {
				t.Fatal(err)
			}
			if _, err := put(rec, sent); !errors.Is(err, discovery.ErrNotNewer) {
				t.Fatalf("Put with an equal send time (a replay): %v, want ErrNotNewer", err)
			}
			expect(rec.ID, rec, "an equal send time")
			if _, err := put(rec, sent.Add(-time.Millisecond)); !errors.Is(err, discovery.ErrNotNewer) {
				t.Fatalf("Put with an older send time: %v, want ErrNotNewer", err)
			}
			expect(rec.ID, rec, "an older send time")
			newer, err := put(rec, sent.Add(time.Millisecond))
			if err != nil {
				t.Fatalf("Put with a newer send time: %v", err)
			}
			expect(rec.ID, newer, "a newer send time")
			// A record without a send time (a previous version's, or a
			// Put without one) is replaced by any, and writes over any.
			plain, err := put(rec, time.Time{})
			if err != nil {
				t.Fatalf("Put without a send time: %v", err)
			}
			expect(rec.ID, plain, "a Put without a send time")
			older, err := put(rec, sent.Add(-time.Second))
			if err != nil {
				t.Fatalf("Put over a record without a send time: %v", err)
			}
			expect(rec.ID, older, "a Put over a record without a send time")
		}
	})

	t.Run("Delete", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		r := rng()
		a, b := discovery.RandRecord(r), discovery.RandRecord(r)
		for _, rec := range []discovery.Record{a, b} {
			if err := h.reg.Put(ctx, rec, longTTL); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.reg.Delete(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := h.reg.Get(ctx, a.ID); !errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("Get after Delete: %v", err)
		}
		if _, err := h.reg.GetByAddr(ctx, a.ID.OverlayAddr()); !errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("GetByAddr after Delete: %v", err)
		}
		if _, err := h.reg.Get(ctx, b.ID); err != nil {
			t.Fatalf("Get of the other peer: %v", err)
		}
		if err := h.reg.Delete(ctx, a.ID); err != nil {
			t.Fatalf("second Delete: %v", err)
		}
	})

	t.Run("Len", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		r := rng()
		const n = 200
		var ids []crypto.PeerID
		for range n {
			rec := discovery.RandRecord(r)
			ids = append(ids, rec.ID)
			if err := h.reg.Put(ctx, rec, longTTL); err != nil {
				t.Fatal(err)
			}
		}
		// Refreshing does not count twice.
		for _, id := range ids[:50] {
			rec := discovery.RandRecord(r)
			rec.ID, rec.Sent = id, time.Time{}
			if err := h.reg.Put(ctx, rec, longTTL); err != nil {
				t.Fatal(err)
			}
		}
		got, err := h.reg.Len(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if h.lenExact && got != n || !h.lenExact && (got < n*97/100 || got > n*103/100) {
			t.Fatalf("Len = %d after %d peers registered", got, n)
		}
		if h.lenExact {
			_ = h.reg.Delete(ctx, ids[0])
			if got, _ := h.reg.Len(ctx); got != n-1 {
				t.Fatalf("Len = %d after a Delete, want %d", got, n-1)
			}
		}
		if err := h.reg.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		r := rng()
		ids := make([]crypto.PeerID, 32)
		for i := range ids {
			ids[i] = discovery.RandRecord(r).ID
		}
		const workers, ops = 8, 300
		var wg sync.WaitGroup
		errc := make(chan error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(seed, uint64(w)+100))
				for range ops {
					id := ids[r.IntN(len(ids))]
					var err error
					switch k := r.IntN(10); {
					case k < 4:
						rec := discovery.RandRecord(r)
						rec.ID = id
						err = h.reg.Put(ctx, rec, longTTL)
					case k < 6:
						var rec discovery.Record
						rec, err = h.reg.Get(ctx, id)
						if err == nil && rec.ID != id {
							err = fmt.Errorf("Get(%v) returned %v", id.Short(), rec.ID.Short())
						}
					case k < 8:
						var rec discovery.Record
						rec, err = h.reg.GetByAddr(ctx, id.OverlayAddr())
						if err == nil && rec.ID != id {
							err = fmt.Errorf("GetByAddr returned %v for %v", rec.ID.Short(), id.Short())
						}
					case k < 9:
						err = h.reg.Delete(ctx, id)
					default:
						_, err = h.reg.Len(ctx)
					}
					if err != nil && !errors.Is(err, discovery.ErrNotFound) && !errors.Is(err, discovery.ErrNotNewer) {
						errc <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Fatal(err)
		}
		// Every peer's last Put is readable once the dust settles.
		for _, id := range ids {
			rec := discovery.RandRecord(r)
			rec.ID, rec.Sent = id, time.UnixMilli(1_900_000_000_000) // newer than any RandRecord's
			if err := h.reg.Put(ctx, rec, longTTL); err != nil {
				t.Fatal(err)
			}
			if got, err := h.reg.Get(ctx, id); err != nil || !discovery.SameRecord(got, rec) {
				t.Fatalf("after concurrent use: %v %+v", err, got)
			}
		}
	})
}

func TestMemoryConformance(t *testing.T) {
	testConformance(t, func(t *testing.T) harness {
		clk := discovery.NewFakeClock()
		m := discovery.NewMemory(clk.Now)
		t.Cleanup(func() { _ = m.Close() })
		return harness{reg: m, advance: clk.Add, shortTTL: 30 * time.Second, lenExact: true}
	})
}
