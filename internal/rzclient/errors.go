package rzclient

import "errors"

// Errors returned by the client; match them with errors.Is.
var (
	// ErrPeerNotFound: the rendezvous knows no such peer, or the peer's
	// policy does not admit us (the server does not say which).
	ErrPeerNotFound = errors.New("peer not found (not registered, or it does not accept us)")
	// ErrNoAnswer: the rendezvous did not answer (unreachable, or the
	// pinned server key is wrong and it cannot read us).
	ErrNoAnswer = errors.New("no answer from the rendezvous server")
	// ErrBadToken: the server refused our join token.
	ErrBadToken = errors.New("rendezvous refused the join token")
	// ErrUnavailable: the server's registry is down.
	ErrUnavailable = errors.New("rendezvous registry unavailable")
	// ErrBadTarget: a connect target that is neither a peer ID nor an
	// overlay address.
	ErrBadTarget = errors.New("not a peer ID or overlay address")
	// ErrBadServer: a malformed connect string.
	ErrBadServer = errors.New("bad rendezvous server")
	// ErrConfig: an invalid Config.
	ErrConfig = errors.New("invalid rendezvous client configuration")
)
