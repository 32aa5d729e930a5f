// Package wait is the one polling helper of keymesh's tests: For checks a
// condition every 10 ms until it holds and fails the test when it has not
// held within a bound. The bound is a limit on a broken test, never a
// measurement: a test asserts what happened, not how fast.
package wait

import (
	"testing"
	"time"
)

// Poll is how often For checks its condition.
const Poll = 10 * time.Millisecond

// For polls cond until it holds and returns how long that took; it fails
// the test (naming what it waited for) when d passes first.
func For(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(Poll)
	}
	return time.Since(start)
}
