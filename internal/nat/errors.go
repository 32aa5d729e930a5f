package nat

import "errors"

// Errors returned by this package.
var (
	ErrNotSTUN        = errors.New("not a STUN message")
	ErrNotResponse    = errors.New("STUN message is not a binding success response")
	ErrUnknownTx      = errors.New("STUN response for an unknown transaction")
	ErrNoMappedAddr   = errors.New("STUN response carries no mapped address")
	ErrSTUNTimeout    = errors.New("no STUN answer")
	ErrClientClosed   = errors.New("STUN client closed")
	ErrNoSTUNSendFunc = errors.New("STUN client needs a Send function")
)
