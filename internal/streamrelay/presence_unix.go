//go:build unix

package streamrelay

import (
	"errors"
	"net"
	"net/netip"
	"syscall"

	"github.com/keymesh/keymesh/internal/streamclient"
)

// recvPresence waits for a datagram at the presence socket without holding
// a buffer and reads it into one from the pool only once it is there, so
// that an idle tunnel holds no receive buffer. The datagram's payload is
// at (*b)[addrLen:addrLen+n]; n > MaxPayload means it was larger.
func recvPresence(udp *net.UDPConn) (b *[]byte, n int, from netip.AddrPort, err error) {
	rc, err := udp.SyscallConn()
	if err != nil {
		return nil, 0, from, err
	}
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		bp := getBuf()
		var sa syscall.Sockaddr
		n, sa, rerr = syscall.Recvfrom(int(fd), (*bp)[streamclient.AddrLen:streamclient.AddrLen+streamclient.MaxPayload+1], syscall.MSG_DONTWAIT)
		if errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EINTR) {
			putBuf(bp)
			return false // wait until the socket is readable
		}
		if rerr != nil {
			putBuf(bp)
			return true
		}
		b = bp
		switch sa := sa.(type) {
		case *syscall.SockaddrInet4:
			from = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
		case *syscall.SockaddrInet6:
			from = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	if err != nil && b != nil {
		putBuf(b)
		b = nil
	}
	return b, n, from, err
}
