//go:build linux

package pathsock

import (
	"errors"
	"net"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// enableOffload turns on UDP generic receive offload (the kernel hands over
// runs of same-size datagrams of one flow in one read) and reports whether
// the socket can send with generic segmentation offload (UDP_SEGMENT: one
// send for a run of same-size datagrams to one address).
func enableOffload(c *net.UDPConn) (gso, gro bool) {
	if os.Getenv("KEYMESH_DISABLE_OFFLOAD") != "" {
		return false, false
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return false, false
	}
	rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		gso = err == nil
		gro = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	})
	return gso, gro
}

// gsoControl appends the control message giving the segment size.
func gsoControl(b []byte, size int) []byte {
	start := len(b)
	b = append(b, make([]byte, unix.CmsgSpace(2))...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[start]))
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&b[start+unix.CmsgSpace(0)])) = uint16(size)
	return b
}

// groSize returns the segment size of a coalesced read, 0 for a single
// datagram.
func groSize(oob []byte) int {
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

// isGSOError tells a send error that means the path cannot segment (the
// device lacks checksum offload).
func isGSOError(err error) bool {
	var se *os.SyscallError
	return errors.As(err, &se) && (se.Err == unix.EIO || se.Err == unix.EINVAL || se.Err == unix.ENOTSUP)
}
