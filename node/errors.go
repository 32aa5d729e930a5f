package node

import "errors"

// Errors returned by this package; match them with errors.Is.
var (
	ErrClosed               = errors.New("node closed")
	ErrNoKey                = errors.New("no identity: set Config.KeyFile (make one with node.GenerateKey) or Config.Seed")
	ErrNotRegistered        = errors.New("not registered with the rendezvous server")
	ErrPeerNotFound         = errors.New("peer not found")
	ErrRefused              = errors.New("peer refused the session")
	ErrNoListener           = errors.New("no listener on that port")
	ErrPortInUse            = errors.New("port already has a listener")
	ErrListenerClosed       = errors.New("listener closed")
	ErrNoSession      error = noSessionError{}
)
