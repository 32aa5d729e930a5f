package faults

import (
	"crypto/sha256"
	"hash"
	"sync"
	"time"
)

// recorder is the receiving end of the stream: it hashes and counts what
// `peer listen` writes and notes when each write arrived.
type recorder struct {
	mu    sync.Mutex
	sum   hash.Hash
	n     int64
	times []time.Time
	now   func() time.Time
}

func newRecorder(now func() time.Time) *recorder {
	return &recorder{sum: sha256.New(), now: now}
}

// Write implements io.Writer.
func (r *recorder) Write(p []byte) (int, error) {
	t := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sum.Write(p)
	r.n += int64(len(p))
	r.times = append(r.times, t)
	return len(p), nil
}

func (r *recorder) result() (n int64, sum [32]byte, times []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	copy(sum[:], r.sum.Sum(nil))
	return r.n, sum, append([]time.Time(nil), r.times...)
}

// longestGap returns the longest time between two deliveries among
// those that end after the fault at from (the first one after it counts
// from the last delivery before the fault, or from the fault when there
// was none), and when that gap ended. ok is false when nothing was
// delivered after from.
func longestGap(times []time.Time, from time.Time) (gap time.Duration, end time.Time, ok bool) {
	prev := from
	for _, t := range times {
		if !t.After(from) {
			prev = t
			continue
		}
		if d := t.Sub(prev); !ok || d > gap {
			gap, end = d, t
		}
		ok = true
		prev = t
	}
	return gap, end, ok
}

// stallThreshold is the gap in delivered bytes that counts as the stream
// having stopped (at the default pace, writes arrive every few ms).
const stallThreshold = 250 * time.Millisecond

// changes returns the samples where the path differs from the one before.
func changes(samples []sample) []sample {
	var out []sample
	for i, s := range samples {
		if i == 0 || s.path != samples[i-1].path {
			out = append(out, s)
		}
	}
	return out
}

// sample is one observation of A's path to B.
type sample struct {
	at   time.Time
	path string
}

// stableSince returns when the path became want for good: the time of the
// first sample of the last run of want samples that lasts to the end.
// ok is false when the last sample is not want.
func stableSince(samples []sample, want string) (time.Time, bool) {
	if len(samples) == 0 || samples[len(samples)-1].path != want {
		return time.Time{}, false
	}
	i := len(samples) - 1
	for i > 0 && samples[i-1].path == want {
		i--
	}
	return samples[i].at, true
}
