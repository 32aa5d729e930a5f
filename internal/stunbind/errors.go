package stunbind

import "errors"

// Errors returned by Parse.
var (
	ErrNotSTUN      = errors.New("not a STUN message")
	ErrNotResponse  = errors.New("STUN message is not a binding success response")
	ErrNoMappedAddr = errors.New("STUN response carries no mapped address")
)
