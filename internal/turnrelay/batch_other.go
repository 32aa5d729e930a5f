//go:build !linux

package turnrelay

import (
	"errors"
	"net"
	"net/netip"
)

// batchReader exists on Linux only (recvmmsg); elsewhere the server's
// sockets are read one datagram at a time.
type batchReader struct{}

func newBatchReader(*net.UDPConn) (*batchReader, error) {
	return nil, errors.ErrUnsupported
}

func (*batchReader) next() ([]byte, netip.AddrPort, error) {
	return nil, netip.AddrPort{}, errors.ErrUnsupported
}
