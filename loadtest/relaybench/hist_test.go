package relaybench

import (
	"testing"
	"time"
)

func TestBucketRoundTrip(t *testing.T) {
	for _, ns := range []int64{0, 5, 15, 16, 17, 100, 999, 12345, 1e6, 3.3e7, 1e9, 1e12} {
		got := bucketValue(bucket(ns))
		if d := float64(got-ns) / float64(max(ns, 1)); ns >= 16 && (d > 0.07 || d < -0.07) {
			t.Errorf("%d ns: bucket %d holds %d ns (%.1f%% off)", ns, bucket(ns), got, 100*d)
		}
		if ns < 16 && got != ns {
			t.Errorf("%d ns: bucket value %d", ns, got)
		}
	}
	for ns := int64(1); ns < 1e7; ns = ns*5/4 + 1 {
		if bucket(ns) < bucket(ns-1) {
			t.Fatalf("bucket(%d) < bucket(%d)", ns, ns-1)
		}
	}
}

func TestQuantile(t *testing.T) {
	var h hist
	for i := range 99 {
		h.add(time.Duration(10+i%3) * time.Microsecond)
	}
	h.add(5 * time.Millisecond)
	s := h.snapshot()
	if p50 := quantile(s, 0.5); p50 < 10*time.Microsecond || p50 > 13*time.Microsecond {
		t.Errorf("p50 %v, want 10-12µs", p50)
	}
	if p100 := quantile(s, 1); p100 < 4700*time.Microsecond || p100 > 5300*time.Microsecond {
		t.Errorf("max %v, want about 5ms", p100)
	}
	if quantile(make([]uint64, histBuckets), 0.5) != 0 {
		t.Error("empty histogram has a median")
	}
}
