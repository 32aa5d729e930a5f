//go:build !linux

package daemon

import (
	"errors"
	"net/netip"
)

var errNoPeerCred = errors.New("this OS does not say which user is at the other end of a local connection")

// tcpPeerUID has no socket table to read outside Linux: a TCP connection to
// a loopback SOCKS5 or forward listener is refused there (see OwnerOnly).
func tcpPeerUID(_, _ netip.AddrPort) (int, error) { return 0, errNoPeerCred }
