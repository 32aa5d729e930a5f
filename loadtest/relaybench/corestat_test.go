package relaybench

import "testing"

func TestReadCoreCountsBusyWithinTotal(t *testing.T) {
	a, err := readCore(0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1e7; i++ { // a little work, so that time passes
		_ = i * i
	}
	b, err := readCore(0)
	if err != nil {
		t.Fatal(err)
	}
	if a.total == 0 || a.busy > a.total || b.total < a.total || b.busy < a.busy {
		t.Fatalf("core 0 times %+v then %+v", a, b)
	}
	if f := busyBetween(a, b); f < 0 || f > 1 {
		t.Fatalf("busy share %v, want within [0, 1]", f)
	}
	if _, err := readCore(1 << 20); err == nil {
		t.Fatal("a core the machine lacks was read")
	}
}
