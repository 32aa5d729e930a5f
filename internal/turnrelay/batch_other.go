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

func (*batchReader) pending() bool { return false }

// relaySock and batchWriter exist on Linux only (sendmmsg); elsewhere the
// fast path sends one datagram at a time.
type relaySock struct{}

func newRelaySock(*net.UDPConn) *relaySock { return nil }

type batchWriter struct{}

func newBatchWriter() *batchWriter { return nil }

func (*batchWriter) full() bool { return true }

func (*batchWriter) add(*relaySock, []byte, netip.AddrPort) bool { return false }

func (*batchWriter) flush() int { return 0 }
