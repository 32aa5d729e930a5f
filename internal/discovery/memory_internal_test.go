package discovery

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
)

// checkShard verifies a shard's internal bookkeeping: every bucket points at
// a live-marked entry with its key and home, the count matches, and the
// garbage equals the bytes of dead entries.
func checkShard(t *testing.T, s *shard) {
	t.Helper()
	n := 0
	for i, b := range s.table {
		if b == 0 {
			continue
		}
		n++
		off := int(uint32(b)) - 1
		if off < 0 || off+hdrSize > len(s.arena) {
			t.Fatalf("bucket %d points outside the arena", i)
		}
		if s.expires(off) == deadMark {
			t.Fatalf("bucket %d points at a dead entry", i)
		}
		k := s.key(off)
		h := hashKey(s.seed, &k)
		if uint32(h>>32) != uint32(b>>32) {
			t.Fatalf("bucket %d has tag %x, key hashes to %x", i, uint32(b>>32), uint32(h>>32))
		}
		if bucket, boff := s.lookup(&k, uint32(h>>32)); bucket != i || boff != off {
			t.Fatalf("lookup of bucket %d's key finds bucket %d", i, bucket)
		}
	}
	if n != s.count {
		t.Fatalf("count %d, table holds %d", s.count, n)
	}
	if n > 0 && n*4 > len(s.table)*3 {
		t.Fatalf("table of %d buckets holds %d: over 3/4", len(s.table), n)
	}
	dead := 0
	for off := 0; off < len(s.arena); off += hdrSize + s.bodyLen(off) {
		if s.expires(off) == deadMark {
			dead += hdrSize + s.bodyLen(off)
		}
	}
	if dead != s.garbage {
		t.Fatalf("garbage %d, dead bytes %d", s.garbage, dead)
	}
}

// TestMemoryModel drives Memory with random operations on a small set of
// peers (so that shards see refreshes, size changes, deletes, expiry, sweeps
// and compactions) and compares every answer with a plain map.
func TestMemoryModel(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	m := NewMemory(clk.Now)
	r := rand.New(rand.NewPCG(7, 8))
	type want struct {
		rec Record
		exp time.Time
	}
	model := map[crypto.PeerID]want{}
	ids := make([]crypto.PeerID, 3000)
	for i := range ids {
		fillID(r, &ids[i])
	}
	for op := range 80_000 {
		id := ids[r.IntN(len(ids))]
		switch k := r.IntN(100); {
		case k < 45:
			rec := randRecord(r)
			rec.ID = id
			ttl := time.Duration(1+r.IntN(60)) * time.Second
			w, ok := model[id]
			stale := ok && clk.Now().Before(w.exp) && !rec.Sent.IsZero() && !w.rec.Sent.IsZero() && !w.rec.Sent.Before(rec.Sent)
			err := m.Put(ctx, rec, ttl)
			switch {
			case stale && !errors.Is(err, ErrNotNewer):
				t.Fatalf("op %d: Put sent %v over sent %v: %v, want ErrNotNewer", op, rec.Sent, w.rec.Sent, err)
			case stale:
				continue
			case err != nil:
				t.Fatalf("op %d: %v", op, err)
			}
			model[id] = want{rec, clk.Now().Add(ttl)}
		case k < 75:
			got, err := m.Get(ctx, id)
			if r.IntN(2) == 0 {
				got, err = m.GetByAddr(ctx, id.OverlayAddr())
			}
			w, ok := model[id]
			live := ok && clk.Now().Before(w.exp)
			switch {
			case live && err != nil:
				t.Fatalf("op %d: get: %v, want a record", op, err)
			case live && !sameRecord(got, w.rec):
				t.Fatalf("op %d: got %+v, want %+v", op, got, w.rec)
			case !live && !errors.Is(err, ErrNotFound):
				t.Fatalf("op %d: get of absent peer: %v", op, err)
			}
		case k < 85:
			if err := m.Delete(ctx, id); err != nil {
				t.Fatal(err)
			}
			delete(model, id)
		case k < 99:
			clk.Add(time.Duration(r.IntN(300)) * time.Millisecond)
		default:
			m.Sweep()
		}
		if op%10_000 == 0 {
			for i := range m.shards {
				checkShard(t, &m.shards[i])
			}
		}
	}
	// After every record expires, sweeping empties the registry and
	// compaction gives the memory back.
	clk.Add(time.Hour)
	for range 10 {
		m.Sweep()
	}
	if n, _ := m.Len(ctx); n != 0 {
		t.Fatalf("Len after expiry and sweeps = %d, want 0", n)
	}
	for i := range m.shards {
		s := &m.shards[i]
		checkShard(t, s)
		if len(s.arena) != 0 || len(s.table) > minTable*8 {
			t.Fatalf("shard %d keeps %d arena bytes and %d buckets when empty", i, len(s.arena), len(s.table))
		}
	}
}

// TestMemorySweepOnPut shows that Puts alone reclaim expired records.
func TestMemorySweepOnPut(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	m := NewMemory(clk.Now)
	r := rand.New(rand.NewPCG(9, 10))
	for range 5000 {
		rec := randRecord(r)
		if err := m.Put(ctx, rec, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	clk.Add(2 * time.Second)
	for range 5000 {
		if err := m.Put(ctx, randRecord(r), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := m.Len(ctx); n > 5000+500 {
		t.Fatalf("Len = %d: Puts did not sweep the 5000 expired records", n)
	}
}

func TestMemoryGetChecksID(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(nil)
	var rec Record
	rec.ID[0] = 1
	if err := m.Put(ctx, rec, time.Minute); err != nil {
		t.Fatal(err)
	}
	// Plant the record under another peer's address: Get of that peer must
	// not return it.
	var other crypto.PeerID
	other[0] = 2
	s, k, tag := m.locate(other.OverlayAddr())
	body, _ := appendRecord(nil, rec)
	s.put(&k, tag, body, time.Now().Add(time.Hour).UnixNano(), time.Now().UnixNano(), 0)
	if _, err := m.Get(ctx, other); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of other peer: %v", err)
	}
}

// TestMemoryRun checks that Run sweeps on its own and returns when its
// context ends (no goroutine outlives it).
func TestMemoryRun(t *testing.T) {
	clk := newFakeClock()
	m := NewMemory(clk.Now)
	r := rand.New(rand.NewPCG(11, 12))
	for range 100 {
		if err := m.Put(context.Background(), randRecord(r), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	clk.Add(time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		m.Run(ctx)
		close(done)
	}()
	deadline := time.Now().Add(5 * SweepInterval)
	for {
		if n, _ := m.Len(ctx); n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not sweep the expired records")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
