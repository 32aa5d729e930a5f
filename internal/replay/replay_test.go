package replay

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"
)

func nonce(i int) []byte {
	b := make([]byte, 24)
	binary.BigEndian.PutUint64(b, uint64(i))
	return b
}

func TestReplayWithinWindow(t *testing.T) {
	c := New(time.Minute, 1000)
	t0 := time.Unix(1_700_000_000, 0)
	sender := []byte("sender-a")
	if err := c.Check(t0, sender, nonce(1)); err != nil {
		t.Fatalf("first: %v", err)
	}
	if err := c.Check(t0.Add(time.Second), sender, nonce(1)); !errors.Is(err, ErrReplay) {
		t.Fatalf("same pair again: %v, want ErrReplay", err)
	}
	// Another sender with the same nonce is a different pair.
	if err := c.Check(t0, []byte("sender-b"), nonce(1)); err != nil {
		t.Fatalf("other sender: %v", err)
	}
	// Still remembered just under one window later, even across a rotation.
	if err := c.Check(t0.Add(59*time.Second), sender, nonce(2)); err != nil {
		t.Fatal(err)
	}
	if err := c.Check(t0.Add(61*time.Second), sender, nonce(2)); !errors.Is(err, ErrReplay) {
		t.Fatalf("after rotation: %v, want ErrReplay", err)
	}
	if err := c.Check(t0.Add(118*time.Second), sender, nonce(2)); !errors.Is(err, ErrReplay) {
		t.Fatalf("59 s after insert: %v, want ErrReplay", err)
	}
}

func TestForgetsAfterTwoWindows(t *testing.T) {
	c := New(time.Minute, 1000)
	t0 := time.Unix(1_700_000_000, 0)
	if err := c.Check(t0, []byte("s"), nonce(1)); err != nil {
		t.Fatal(err)
	}
	if err := c.Check(t0.Add(121*time.Second), []byte("s"), nonce(1)); err != nil {
		t.Fatalf("after two windows: %v, want nil", err)
	}
}

func TestStamped(t *testing.T) {
	c := New(time.Minute, 1000)
	t0 := time.Unix(1_700_000_000, 0)
	stamp := t0.Add(-20 * time.Second)
	if err := c.CheckStamped(t0, stamp, []byte("s"), nonce(1)); err != nil {
		t.Fatal(err)
	}
	// The replay keeps its stamp: refused while the stamp is acceptable,
	// stale after.
	if err := c.CheckStamped(t0.Add(9*time.Second), stamp, []byte("s"), nonce(1)); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay within the window: %v, want ErrReplay", err)
	}
	if err := c.CheckStamped(t0.Add(11*time.Second), stamp, []byte("s"), nonce(1)); !errors.Is(err, ErrStale) {
		t.Fatalf("replay after the window: %v, want ErrStale", err)
	}
	if err := c.CheckStamped(t0, t0.Add(31*time.Second), []byte("s"), nonce(2)); !errors.Is(err, ErrStale) {
		t.Fatalf("stamp 31 s ahead: %v, want ErrStale", err)
	}
}

// TestPressure is the attack of issue 10 item 3 on the cache itself: a flood
// of distinct pairs stamped anywhere in the window must neither stop fresh
// pairs (the old cache answered ErrFull until it rotated) nor let a replay
// of a forgotten old pair through, and the cache stays within its bound.
func TestPressure(t *testing.T) {
	const bound = numShards * 8
	c := New(time.Minute, bound)
	t0 := time.Unix(1_700_000_000, 0)
	// Legitimate pairs, stamped by a clock 10 s behind.
	legit := t0.Add(-10 * time.Second)
	for i := range 4 {
		if err := c.CheckStamped(t0, legit, []byte("legit"), nonce(i)); err != nil {
			t.Fatal(err)
		}
	}
	// The flood, stamped over the whole window (oldest first).
	for i := range 100 * bound {
		stamp := t0.Add(-29*time.Second + time.Duration(i)*58*time.Second/time.Duration(100*bound))
		err := c.CheckStamped(t0, stamp, []byte("flood"), nonce(i))
		if err != nil && !errors.Is(err, ErrStale) {
			t.Fatalf("flood pair %d: %v", i, err)
		}
	}
	if n := c.Len(); n > bound {
		t.Fatalf("Len = %d beyond the bound %d", n, bound)
	}
	for i := range 100 {
		if err := c.CheckStamped(t0, t0, []byte("fresh"), nonce(i)); err != nil {
			t.Fatalf("fresh pair %d after the flood: %v", i, err)
		}
	}
	for i := range 4 {
		if err := c.CheckStamped(t0, legit, []byte("legit"), nonce(i)); err == nil {
			t.Fatalf("replay of legitimate pair %d accepted after the flood", i)
		}
	}
	if st := c.Stats(); st.Raised == 0 {
		t.Fatalf("stats %+v: no generation dropped early", st)
	}
}

// TestPressureAtNow floods the current generation itself: fresh pairs still
// pass (the cache forgets single pairs instead) and it stays bounded.
func TestPressureAtNow(t *testing.T) {
	const bound = numShards * 8
	c := New(time.Minute, bound)
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 10 * bound {
		if err := c.CheckStamped(t0, t0, []byte("flood"), nonce(i)); err != nil {
			t.Fatalf("pair %d: %v", i, err)
		}
	}
	if n := c.Len(); n > bound {
		t.Fatalf("Len = %d beyond the bound %d", n, bound)
	}
	if st := c.Stats(); st.Overflowed == 0 {
		t.Fatalf("stats %+v: overflow not counted", st)
	}
}

func TestConcurrent(t *testing.T) {
	c := New(time.Minute, 1<<16)
	now := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for i := 0; i < 1000; i++ {
				if c.Check(now, []byte("s"), nonce(i)) == nil {
					n++
				}
			}
			mu.Lock()
			accepted += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	if accepted != 1000 {
		t.Fatalf("accepted %d of 4x1000 checks of 1000 distinct pairs, want exactly 1000", accepted)
	}
}

func BenchmarkCheck(b *testing.B) {
	c := New(time.Minute, 1<<20)
	now := time.Now()
	s := make([]byte, 32)
	n := make([]byte, 24)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		binary.BigEndian.PutUint64(n, uint64(i))
		if i%(1<<19) == 0 {
			now = now.Add(time.Minute) // keep within the bound
		}
		_ = c.Check(now, s, n)
	}
}

// TestPressureFuture floods generations stamped ahead of now (a clock the
// window still accepts): they are dropped under a lowered ceiling, not
// single pairs of the present, so nothing recent is forgotten.
func TestPressureFuture(t *testing.T) {
	const bound = numShards * 8
	c := New(time.Minute, bound)
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 4 {
		if err := c.CheckStamped(t0, t0, []byte("legit"), nonce(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 50 * bound {
		stamp := t0.Add(5*time.Second + time.Duration(i%25)*time.Second)
		if err := c.CheckStamped(t0, stamp, []byte("flood"), nonce(i)); err != nil && !errors.Is(err, ErrStale) {
			t.Fatalf("flood pair %d: %v", i, err)
		}
	}
	if n := c.Len(); n > bound {
		t.Fatalf("Len = %d beyond the bound %d", n, bound)
	}
	for i := range 4 {
		if err := c.CheckStamped(t0.Add(time.Second), t0, []byte("legit"), nonce(i)); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay of legitimate pair %d: %v, want ErrReplay", i, err)
		}
	}
	if err := c.CheckStamped(t0, t0, []byte("fresh"), nonce(1)); err != nil {
		t.Fatalf("fresh pair: %v", err)
	}
	if st := c.Stats(); st.Overflowed != 0 || st.Raised == 0 {
		t.Fatalf("stats %+v: want generations dropped, no pair of the present forgotten", st)
	}
	// Once now has moved on, stamps in the formerly refused range pass.
	later := t0.Add(20 * time.Second)
	if err := c.CheckStamped(later, later, []byte("fresh"), nonce(2)); err != nil {
		t.Fatalf("fresh pair 20 s later: %v", err)
	}
}

// TestCheckPressure: Check (no stamps) stays bounded and keeps taking
// fresh pairs when full, forgetting the earliest filed.
func TestCheckPressure(t *testing.T) {
	const bound = numShards * 8
	c := New(time.Minute, bound)
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 20 * bound {
		now := t0.Add(time.Duration(i) * 5 * time.Millisecond)
		if err := c.Check(now, []byte("s"), nonce(i)); err != nil {
			t.Fatalf("pair %d: %v", i, err)
		}
	}
	if n := c.Len(); n > bound {
		t.Fatalf("Len = %d beyond the bound %d", n, bound)
	}
	last := t0.Add(time.Duration(20*bound-1) * 5 * time.Millisecond)
	if err := c.Check(last, []byte("s"), nonce(20*bound-1)); !errors.Is(err, ErrReplay) {
		t.Fatalf("the latest pair again: %v, want ErrReplay", err)
	}
}
