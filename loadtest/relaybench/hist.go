package relaybench

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// histBuckets is the size of a latency histogram: 16 buckets per power of
// two of nanoseconds (about 6% wide). tools/derper/derpgen uses the same.
const histBuckets = 64 * 16

// bucket returns the histogram bucket of a latency in nanoseconds.
func bucket(ns int64) int {
	if ns < 16 {
		return int(max(ns, 0))
	}
	u := uint64(ns)
	e := bits.Len64(u) - 5
	return min(e*16+int(u>>uint(e)), histBuckets-1)
}

// bucketValue is the middle of bucket b, in nanoseconds.
func bucketValue(b int) int64 {
	if b < 16 {
		return int64(b)
	}
	e := b/16 - 1
	m := int64(b%16 + 16)
	return m<<e + (int64(1)<<e)/2
}

// hist is a latency histogram that goroutines add to concurrently.
type hist [histBuckets]atomic.Uint64

func (h *hist) add(d time.Duration) { h[bucket(int64(d))].Add(1) }

func (h *hist) reset() {
	for i := range h {
		h[i].Store(0)
	}
}

func (h *hist) snapshot() []uint64 {
	s := make([]uint64, histBuckets)
	for i := range h {
		s[i] = h[i].Load()
	}
	return s
}

// quantile returns the q-quantile (0..1) of a histogram snapshot, 0 if it
// is empty.
func quantile(s []uint64, q float64) time.Duration {
	var total uint64
	for _, v := range s {
		total += v
	}
	if total == 0 {
		return 0
	}
	rank := uint64(q * float64(total-1))
	var seen uint64
	for b, v := range s {
		seen += v
		if seen > rank {
			return time.Duration(bucketValue(b))
		}
	}
	return time.Duration(bucketValue(len(s) - 1))
}
