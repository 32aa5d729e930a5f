// Package testclock is the clock a test injects (a Config's Now) and moves
// by hand: time stands still until the test calls Add. It is safe for
// concurrent use.
package testclock

import (
	"sync/atomic"
	"time"
)

// Clock is a settable clock.
type Clock struct{ ns atomic.Int64 }

// New returns a clock that reads start until it is moved.
func New(start time.Time) *Clock {
	c := &Clock{}
	c.ns.Store(start.UnixNano())
	return c
}

// Now is the clock's time.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()) }

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) { c.ns.Add(int64(d)) }
