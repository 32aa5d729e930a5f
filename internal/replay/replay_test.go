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
	if n := c.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1", n)
	}
}

func TestFull(t *testing.T) {
	c := New(time.Minute, numShards) // one entry per shard
	t0 := time.Unix(1_700_000_000, 0)
	full := 0
	for i := 0; i < 10*numShards; i++ {
		err := c.Check(t0, []byte("s"), nonce(i))
		if errors.Is(err, ErrFull) {
			full++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if full == 0 || c.Len() > numShards {
		t.Fatalf("full=%d len=%d: the cache grew past its bound", full, c.Len())
	}
	// After a window the generation rotates and there is room again, but the
	// old pairs are still refused.
	later := t0.Add(61 * time.Second)
	refused := 0
	for i := 0; i < 10*numShards; i++ {
		if err := c.Check(later, []byte("s"), nonce(i)); errors.Is(err, ErrReplay) {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("no old pair refused after rotation")
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
