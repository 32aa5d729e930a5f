package relay

import "errors"

// Errors returned by this package; callers match them with errors.Is.
var (
	// ErrConfig: the Config is incomplete or out of range.
	ErrConfig = errors.New("relay: bad config")
	// ErrNotServing: no Serve loop is running (the health check's answer).
	ErrNotServing = errors.New("relay: not serving any socket")
)
