package crypto

import "errors"

// Errors returned by this package; callers match them with errors.Is.
var (
	ErrBadPeerID       = errors.New("not a peer ID (want 52 lowercase base32 characters)")
	ErrBadKeyFile      = errors.New("malformed key file")
	ErrKeyFileExposed  = errors.New("key file is readable by others")
	ErrOpen            = errors.New("message authentication failed")
	ErrTicketTruncated = errors.New("ticket truncated")
	ErrTicketUnknown   = errors.New("ticket sealed under an unknown key")
	ErrTicketForged    = errors.New("ticket failed authentication")
	ErrTicketExpired   = errors.New("ticket expired")
	ErrBadSecret       = errors.New("bad secret file")
	ErrWrongPeer       = errors.New("peer certificate does not carry the expected key")
)
