//go:build !unix

package streamrelay

import (
	"net"
	"net/netip"

	"github.com/keymesh/keymesh/internal/streamclient"
)

// recvPresence reads a datagram at the presence socket into a buffer from
// the pool; the payload is at (*b)[addrLen:addrLen+n] and n > MaxPayload
// means it was larger. (On unix systems the buffer is taken only once the
// datagram is there.)
func recvPresence(udp *net.UDPConn) (b *[]byte, n int, from netip.AddrPort, err error) {
	b = getBuf()
	n, from, err = udp.ReadFromUDPAddrPort((*b)[streamclient.AddrLen : streamclient.AddrLen+streamclient.MaxPayload+1])
	if err != nil {
		putBuf(b)
		return nil, 0, from, err
	}
	return b, n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), nil
}
