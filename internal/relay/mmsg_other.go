//go:build !linux

package relay

import "net"

// serveBatch falls back to one datagram at a time where recvmmsg/sendmmsg
// are not wired up.
func (w *worker) serveBatch(c *net.UDPConn) error { return w.serveUDP(c) }
