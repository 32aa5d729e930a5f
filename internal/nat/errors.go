package nat

import "errors"

// Errors returned by this package.
var (
	ErrUnknownTx      = errors.New("STUN response for an unknown transaction")
	ErrSTUNTimeout    = errors.New("no STUN answer")
	ErrClientClosed   = errors.New("STUN client closed")
	ErrNoSTUNSendFunc = errors.New("STUN client needs a Send function")
)
