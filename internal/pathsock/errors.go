package pathsock

import "errors"

// Errors returned by this package.
var (
	ErrNoIdentity  = errors.New("pathsock: Config.Identity is required")
	ErrUnknownPeer = errors.New("unknown peer: no path to it yet (connect through the rendezvous first)")
	ErrNoPath      = errors.New("no path to peer: no direct path and no relay ticket")
	ErrNotVirtual  = errors.New("not a peer's virtual address")
	ErrPingTimeout = errors.New("no probe reply")
)
