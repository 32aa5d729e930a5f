package labrun

import "errors"

var (
	// ErrNotRegistered is returned when a peer daemon did not register with
	// the rendezvous server in time.
	ErrNotRegistered = errors.New("labrun: peer not registered")
	// ErrExited is returned when a process ended while it should still run.
	ErrExited = errors.New("labrun: process exited")
	// ErrClosed is returned by methods called after Lab.Close.
	ErrClosed = errors.New("labrun: lab is closed")
	// ErrExternal is returned by methods that reach the lab's own servers
	// (Metrics, Outcomes) when the lab uses servers outside it.
	ErrExternal = errors.New("labrun: the servers are outside the lab: scrape their admin endpoints yourself")
)
