package udpbatch

import (
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Result is what one batch call did: N messages moved, or Errno set (N is
// then 0).
type Result struct {
	N     int
	Errno syscall.Errno
}

// Recv reads into hdrs with one recvmmsg (MSG_DONTWAIT), and reports false
// when nothing is queued: the body of a syscall.RawConn Read, whose poller
// then waits. raw makes it a raw system call, one the Go runtime is not
// told of: a non-blocking call never sleeps, and a long one (a 64 KiB run
// delivered on loopback) then does not make the runtime's monitor hand the
// goroutine's processor to another thread. Nor does a raw call wake the
// monitor, which sleeps while every processor is idle: announced, the
// first call after each wake-up of an idle server does, and the monitor
// then polls beside it for a while, a futex wake and several sleeps per
// arrival, more than the call costs.
func Recv(fd uintptr, hdrs []unix.Mmsghdr, raw bool, r *Result) bool {
	return call(unix.SYS_RECVMMSG, fd, hdrs, raw, r)
}

// Send writes hdrs with one sendmmsg (MSG_DONTWAIT), and reports false when
// the socket's buffer is full: the body of a syscall.RawConn Write. raw is
// as for Recv. r.N may be fewer than len(hdrs): the caller sends the rest
// in another call; with r.Errno set, hdrs[0] was refused.
func Send(fd uintptr, hdrs []unix.Mmsghdr, raw bool, r *Result) bool {
	return call(unix.SYS_SENDMMSG, fd, hdrs, raw, r)
}

func call(trap, fd uintptr, hdrs []unix.Mmsghdr, raw bool, r *Result) bool {
	if len(hdrs) == 0 {
		r.N, r.Errno = 0, 0
		return true
	}
	for {
		var n uintptr
		var e syscall.Errno
		if raw {
			n, _, e = unix.RawSyscall6(trap, fd, uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), unix.MSG_DONTWAIT, 0, 0)
		} else {
			n, _, e = unix.Syscall6(trap, fd, uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), unix.MSG_DONTWAIT, 0, 0)
		}
		switch e {
		case 0:
			r.N, r.Errno = int(n), 0
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			r.N, r.Errno = 0, e
			return true
		}
	}
}

// AddrPort decodes a socket address the kernel wrote (IPv4 or IPv6, room
// for either), unmapping a v4-mapped IPv6 address; the zero AddrPort for
// another family.
func AddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), ntohs(sa4.Port))
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), ntohs(sa.Port))
	}
	return netip.AddrPort{}
}

// PutAddrPort writes dst into sa for a socket of the given family (v6: an
// AF_INET6 socket, which reaches IPv4 as v4-mapped) and returns the
// address length for the message header; 0 when an AF_INET socket cannot
// reach dst.
func PutAddrPort(sa *unix.RawSockaddrInet6, dst netip.AddrPort, v6 bool) uint32 {
	a := dst.Addr()
	if v6 {
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: htons(dst.Port()), Addr: a.As16()}
		return unix.SizeofSockaddrInet6
	}
	if a = a.Unmap(); !a.Is4() {
		return 0
	}
	sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
	*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: htons(dst.Port()), Addr: a.As4()}
	return unix.SizeofSockaddrInet4
}

// ntohs reads a port the kernel stored in network byte order.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// htons stores a port in network byte order.
func htons(p uint16) uint16 { return ntohs(p) }
