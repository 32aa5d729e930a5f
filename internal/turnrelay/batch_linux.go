package turnrelay

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchReader reads a UDP socket up to readBatch datagrams per system call
// (recvmmsg) into buffers allocated once, and hands them out one by one.
type batchReader struct {
	rc    syscall.RawConn
	bufs  [][]byte
	names []unix.RawSockaddrInet6
	iov   []unix.Iovec
	hdr   []unix.Mmsghdr

	got, pos int
	errno    syscall.Errno
	readFn   func(fd uintptr) bool // recvmmsg, made once so a read does not allocate
}

// readBatch is how many datagrams one read takes at most.
const readBatch = 32

// readSlot is a receive buffer: more than pion's read limit, so that a
// datagram pion would drop for its size is seen to be one.
const readSlot = 2048

func newBatchReader(c *net.UDPConn) (*batchReader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("batch reader: %w", err)
	}
	r := &batchReader{
		rc:    rc,
		bufs:  make([][]byte, readBatch),
		names: make([]unix.RawSockaddrInet6, readBatch),
		iov:   make([]unix.Iovec, readBatch),
		hdr:   make([]unix.Mmsghdr, readBatch),
	}
	mem := make([]byte, readBatch*readSlot)
	for i := range readBatch {
		r.bufs[i] = mem[i*readSlot : (i+1)*readSlot : (i+1)*readSlot]
		r.iov[i].Base = &r.bufs[i][0]
		r.iov[i].SetLen(readSlot)
		h := &r.hdr[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Iov = &r.iov[i]
		h.SetIovlen(1)
	}
	r.readFn = r.recvmmsg
	return r, nil
}

// recvmmsg is the body of RawConn.Read: false asks the poller to wait.
func (r *batchReader) recvmmsg(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdr[0])),
			uintptr(len(r.hdr)), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			r.got, r.errno = int(n), 0
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			r.got, r.errno = 0, e
			return true
		}
	}
}

// next returns the next datagram and its source (unmapped); the datagram
// is valid until the following call.
func (r *batchReader) next() ([]byte, netip.AddrPort, error) {
	for r.pos >= r.got {
		for i := range r.hdr {
			r.hdr[i].Hdr.Namelen = unix.SizeofSockaddrInet6
			r.hdr[i].Hdr.Flags = 0
			r.hdr[i].Len = 0
		}
		r.got, r.pos = 0, 0
		if err := r.rc.Read(r.readFn); err != nil {
			return nil, netip.AddrPort{}, err
		}
		if r.errno != 0 {
			return nil, netip.AddrPort{}, &net.OpError{Op: "read", Net: "udp", Err: r.errno}
		}
	}
	i := r.pos
	r.pos++
	return r.bufs[i][:min(int(r.hdr[i].Len), readSlot)], sockaddrAddrPort(&r.names[i]), nil
}

// sockaddrAddrPort decodes a received source address, unmapped; the zero
// AddrPort for a family other than IPv4 and IPv6.
func sockaddrAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), ntohs(sa4.Port))
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), ntohs(sa.Port))
	}
	return netip.AddrPort{}
}

// ntohs reads a port in network byte order as the kernel stored it.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}
