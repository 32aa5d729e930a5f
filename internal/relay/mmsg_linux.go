package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/keymesh/keymesh/internal/wire"
)

// mmsg moves datagrams in batches with recvmmsg and sendmmsg. Every buffer,
// address and header is allocated once; a forwarded frame is sent straight
// from the receive buffer it arrived in (a suffix of it).
type mmsg struct {
	rc syscall.RawConn
	v6 bool // the socket is AF_INET6 (IPv4 peers appear v4-mapped)

	bufs   [][]byte
	rnames []unix.RawSockaddrInet6
	riov   []unix.Iovec
	rhdr   []unix.Mmsghdr

	replies [][]byte
	snames  []unix.RawSockaddrInet6
	siov    []unix.Iovec
	shdr    []unix.Mmsghdr
	skind   []action

	// The system call closures and their results, made once so that a
	// batch does not allocate.
	readFn, writeFn func(fd uintptr) bool
	got, off, ns    int
	errno           syscall.Errno
}

func newMmsg(c *net.UDPConn, n int) (*mmsg, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	m := &mmsg{rc: rc}
	var domain int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, fmt.Errorf("socket domain: %w", serr)
	}
	m.v6 = domain == unix.AF_INET6

	mem := make([]byte, n*wire.MaxFrame)
	rmem := make([]byte, n*wire.RelayBoundLen)
	m.bufs = make([][]byte, n)
	m.replies = make([][]byte, n)
	m.rnames = make([]unix.RawSockaddrInet6, n)
	m.riov = make([]unix.Iovec, n)
	m.rhdr = make([]unix.Mmsghdr, n)
	m.snames = make([]unix.RawSockaddrInet6, n)
	m.siov = make([]unix.Iovec, n)
	m.shdr = make([]unix.Mmsghdr, n)
	m.skind = make([]action, n)
	for i := range n {
		m.bufs[i] = mem[i*wire.MaxFrame : (i+1)*wire.MaxFrame : (i+1)*wire.MaxFrame]
		m.replies[i] = rmem[i*wire.RelayBoundLen : i*wire.RelayBoundLen : (i+1)*wire.RelayBoundLen]
		m.riov[i].Base = &m.bufs[i][0]
		m.riov[i].SetLen(wire.MaxFrame)
		h := &m.rhdr[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&m.rnames[i]))
		h.Iov = &m.riov[i]
		h.SetIovlen(1)
		s := &m.shdr[i].Hdr
		s.Name = (*byte)(unsafe.Pointer(&m.snames[i]))
		s.Iov = &m.siov[i]
		s.SetIovlen(1)
	}
	m.readFn = m.recvmmsg
	m.writeFn = m.sendmmsg
	return m, nil
}

// recvmmsg is the body of RawConn.Read: false asks the poller to wait.
func (m *mmsg) recvmmsg(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&m.rhdr[0])),
			uintptr(len(m.rhdr)), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			m.got, m.errno = int(r), 0
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			m.got, m.errno = 0, e
			return true
		}
	}
}

// sendmmsg is the body of RawConn.Write, sending shdr[off:ns].
func (m *mmsg) sendmmsg(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&m.shdr[m.off])),
			uintptr(m.ns-m.off), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			m.got, m.errno = int(r), 0
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			m.got, m.errno = 0, e
			return true
		}
	}
}

// read fills the receive slots and returns how many arrived.
func (m *mmsg) read() (int, error) {
	for i := range m.rhdr {
		m.rhdr[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		m.rhdr[i].Hdr.Flags = 0
		m.rhdr[i].Len = 0
	}
	if err := m.rc.Read(m.readFn); err != nil {
		return 0, err
	}
	if m.errno != 0 {
		return 0, m.errno
	}
	return m.got, nil
}

// source decodes the address receive slot i came from.
func (m *mmsg) source(i int) netip.AddrPort {
	sa := &m.rnames[i]
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), ntohs(sa4.Port))
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), ntohs(sa.Port))
	}
	return netip.AddrPort{}
}

// setDest writes dst into send slot j, reporting false when the socket's
// family cannot reach it.
func (m *mmsg) setDest(j int, dst netip.AddrPort) bool {
	a := dst.Addr()
	if !m.v6 {
		if !a.Unmap().Is4() {
			return false
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&m.snames[j]))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: htons(dst.Port()), Addr: a.Unmap().As4()}
		m.shdr[j].Hdr.Namelen = unix.SizeofSockaddrInet4
		return true
	}
	m.snames[j] = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: htons(dst.Port()), Addr: a.As16()}
	m.shdr[j].Hdr.Namelen = unix.SizeofSockaddrInet6
	return true
}

// queue adds out to the send batch, addressed to dst (a forward) or to the
// source of receive slot i (a reply, sent back to the very address it came
// from, scope included).
func (m *mmsg) queue(act action, out []byte, dst netip.AddrPort, i int) bool {
	j := m.ns
	if act.toSource() {
		m.snames[j] = m.rnames[i]
		m.shdr[j].Hdr.Namelen = m.rhdr[i].Hdr.Namelen
	} else if !m.setDest(j, dst) {
		return false
	}
	m.siov[j].Base = &out[0]
	m.siov[j].SetLen(len(out))
	m.skind[j] = act
	m.ns++
	return true
}

// flush sends the queued batch; a message the kernel refuses is counted and
// skipped.
func (m *mmsg) flush(w *worker) error {
	m.off = 0
	for m.off < m.ns {
		if err := m.rc.Write(m.writeFn); err != nil {
			return err
		}
		if m.errno != 0 {
			w.sent(m.skind[m.off], 0, m.errno)
			m.off++
			continue
		}
		for k := m.off; k < m.off+m.got; k++ {
			w.sent(m.skind[k], int(m.siov[k].Len), nil)
		}
		m.off += m.got
	}
	m.ns = 0
	return nil
}

// serveBatch serves a UDP socket in batches.
func (w *worker) serveBatch(c *net.UDPConn) error {
	m, err := newMmsg(c, w.s.cfg.Batch)
	if err != nil {
		w.s.log.Warn("relay: batched I/O unavailable, serving one datagram at a time", "err", err)
		return w.serveUDP(c)
	}
	streak := 0
	for {
		n, err := m.read()
		if err != nil {
			if fatal(err) {
				return err
			}
			if errors.Is(err, unix.ENOSYS) {
				return w.serveUDP(c)
			}
			w.transient("recvmmsg", err, &streak)
			continue
		}
		streak = 0
		now := w.s.cfg.Now()
		nowNs := now.UnixNano()
		for i := range n {
			pkt := m.bufs[i][:m.rhdr[i].Len]
			if m.rhdr[i].Hdr.Flags&unix.MSG_TRUNC != 0 {
				w.st.received++
				w.st.drop(reasonMalformed) // larger than any frame
				continue
			}
			act, out, dst := w.handle(pkt, m.source(i), now, nowNs, m.replies[i])
			if act != actDrop && !m.queue(act, out, dst, i) {
				w.st.drop(reasonSendFailed)
			}
		}
		err = m.flush(w)
		w.s.m.flush(&w.st)
		if err != nil {
			return err
		}
	}
}

func htons(v uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&v))
	b[0], b[1] = byte(v>>8), byte(v)
	return v
}

func ntohs(v uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&v))
	return uint16(b[0])<<8 | uint16(b[1])
}
