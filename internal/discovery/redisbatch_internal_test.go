package discovery

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// TestRedisPutQueueBound: while the flushers are busy (Redis slow), the
// queue of waiting Puts stops at maxPutQueue and a Put beyond it fails at
// once with ErrUnavailable instead of growing it.
func TestRedisPutQueueBound(t *testing.T) {
	r := &Redis{prefix: "km", window: time.Minute, now: time.Now}
	r.puts.running = maxPutFlushers // every flusher busy: nothing drains the queue
	for i := range maxPutQueue {
		if !r.enqueue(&putOp{}) {
			t.Fatalf("Put %d refused below the bound %d", i, maxPutQueue)
		}
	}
	rec := randRecord(rand.New(rand.NewPCG(9, 9)))
	err := r.Put(context.Background(), rec, time.Minute)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, errPutQueueFull) {
		t.Fatalf("Put beyond the queue's bound: %v, want ErrUnavailable", err)
	}
	if n := len(r.puts.pending); n != maxPutQueue {
		t.Fatalf("%d Puts queued, bound %d", n, maxPutQueue)
	}
}
