// Package ci is the one place a test decides to skip. Under CI (the CI
// environment variable set, as .ci/run and scripts/test.sh do) a test that
// cannot run its real parts (root, network namespaces, Redis, coturn,
// pebble, a binary it builds) fails instead of skipping, so that a green CI
// run never counts a skipped proof as a pass.
package ci

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// On reports whether the tests run under CI: CI is set to anything but
// "", "0" or "false".
func On() bool {
	switch strings.ToLower(strings.TrimSpace(os.Getenv("CI"))) {
	case "", "0", "false", "no":
		return false
	}
	return true
}

// Skip skips the test with the reason, or fails it under CI.
func Skip(tb testing.TB, reason string) {
	tb.Helper()
	if On() {
		tb.Fatalf("CI must run this test, but it would skip: %s", reason)
		return
	}
	tb.Skip(reason)
}

// Skipf is Skip with a format.
func Skipf(tb testing.TB, format string, args ...any) {
	tb.Helper()
	Skip(tb, fmt.Sprintf(format, args...))
}

// NeedRoot skips (or under CI fails) a test that is not run as root; what
// says what it needs root for.
func NeedRoot(tb testing.TB, what string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Skipf(tb, "needs root: %s", what)
	}
}
