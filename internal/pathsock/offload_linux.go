//go:build linux

package pathsock

import (
	"net"
	"os"

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
