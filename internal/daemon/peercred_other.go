//go:build !linux && !darwin

package daemon

import "net"

// unixPeerUID cannot tell who connected on this OS, so the API socket
// refuses every connection there (see OwnerOnly).
func unixPeerUID(*net.UnixConn) (int, error) { return 0, errNoPeerCred }
