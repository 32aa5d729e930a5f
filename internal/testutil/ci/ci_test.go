package ci

import (
	"testing"
)

// fakeTB records what a test would have done.
type fakeTB struct {
	testing.TB
	fatal, skip bool
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Fatalf(string, ...any) { f.fatal = true }
func (f *fakeTB) Skip(...any)           { f.skip = true }
func (f *fakeTB) Skipf(string, ...any)  { f.skip = true }

func TestOn(t *testing.T) {
	for v, want := range map[string]bool{"": false, "0": false, "false": false, "FALSE": false, "true": true, "1": true, "yes": true} {
		t.Setenv("CI", v)
		if On() != want {
			t.Errorf("CI=%q: On() = %v, want %v", v, !want, want)
		}
	}
}

func TestSkipFailsUnderCI(t *testing.T) {
	t.Setenv("CI", "1")
	f := &fakeTB{}
	Skip(f, "no redis")
	if !f.fatal || f.skip {
		t.Fatalf("under CI: fatal %v, skip %v; want a failure", f.fatal, f.skip)
	}
	t.Setenv("CI", "")
	f = &fakeTB{}
	Skipf(f, "no %s", "redis")
	if f.fatal || !f.skip {
		t.Fatalf("outside CI: fatal %v, skip %v; want a skip", f.fatal, f.skip)
	}
}
