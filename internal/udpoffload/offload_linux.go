//go:build linux

package udpoffload

import (
	"errors"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// GSOSpace is the room a UDP_SEGMENT control message takes.
var GSOSpace = unix.CmsgSpace(2)

// PutGSO writes the UDP_SEGMENT control message giving the segment size
// into b, which holds at least GSOSpace bytes.
func PutGSO(b []byte, size int) {
	clear(b[:GSOSpace])
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&b[unix.CmsgSpace(0)])) = uint16(size)
}

// AppendGSO appends the UDP_SEGMENT control message giving the segment
// size to b.
func AppendGSO(b []byte, size int) []byte {
	start := len(b)
	b = append(b, make([]byte, GSOSpace)...)
	PutGSO(b[start:], size)
	return b
}

// GROSize finds the UDP_GRO segment size in a read's control messages: 0
// for a single datagram, or when the messages are malformed.
func GROSize(oob []byte) int {
	for len(oob) >= unix.CmsgSpace(0) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.CmsgLen(0) || l > len(oob) {
			return 0
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(4) {
			return int(*(*int32)(unsafe.Pointer(&oob[unix.CmsgSpace(0)])))
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next > len(oob) {
			return 0
		}
		oob = oob[next:]
	}
	return 0
}

// IsGSOErrno tells a send's errno that means the path cannot segment (the
// device lacks checksum offload).
func IsGSOErrno(e syscall.Errno) bool {
	return e == unix.EIO || e == unix.EINVAL || e == unix.ENOTSUP
}

// IsGSOError is IsGSOErrno for an error a net.UDPConn's send returned.
func IsGSOError(err error) bool {
	var se *os.SyscallError
	if !errors.As(err, &se) {
		return false
	}
	e, ok := se.Err.(syscall.Errno)
	return ok && IsGSOErrno(e)
}

// Join appends b to the message h as the next datagram of its run r when
// it fits: iov is the free entry right after the message's buffer list
// (the caller advances past it), ctl the message's control space (at
// least GSOSpace bytes), which gets the UDP_SEGMENT message once the run
// holds two datagrams.
func Join(r *Run, h *unix.Msghdr, iov *unix.Iovec, ctl []byte, b []byte) bool {
	if !r.Fits(len(b)) {
		return false
	}
	iov.Base = &b[0]
	iov.SetLen(len(b))
	r.Segs++
	r.Bytes += len(b)
	r.Open = len(b) == r.Size
	h.SetIovlen(r.Segs)
	if r.Segs == 2 {
		PutGSO(ctl, r.Size)
		h.Control = &ctl[0]
		h.SetControllen(GSOSpace)
	}
	return true
}
