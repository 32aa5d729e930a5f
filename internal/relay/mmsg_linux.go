package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/keymesh/keymesh/internal/udpbatch"
	"github.com/keymesh/keymesh/internal/udpoffload"
	"github.com/keymesh/keymesh/internal/wire"
)

// Segmentation offload. With UDP_GRO on, one receive slot may hold a run of
// same-size datagrams from one source (a peer's segmented send, or what the
// NIC coalesced), split here; with UDP_SEGMENT, one send message carries a
// run of forwards to one address as a single buffer list that the kernel
// cuts into datagrams. Keymesh peers send their QUIC packets to the relay
// in such runs, so a run crosses the relay with one receive, one ticket
// open (worker.last) and one send, instead of one of each per datagram.
const (
	// groSlot is a receive slot's size under UDP_GRO: a whole coalesced
	// run (the kernel keeps it under 64 KiB).
	groSlot = 1 << 16
	// ctlSpace is each slot's room for control messages (one UDP_GRO or
	// UDP_SEGMENT).
	ctlSpace = 64
	// lookBack is how many queued send messages a forward looks through
	// for an open run to the same address.
	lookBack = 8
)

// mmsg moves datagrams in batches with recvmmsg and sendmmsg. Every buffer,
// address and header is allocated once; a forwarded frame is sent straight
// from the receive buffer it arrived in (a suffix of it), and with send
// offload several such suffixes make one message's buffer list.
type mmsg struct {
	rc  syscall.RawConn
	v6  bool // the socket is AF_INET6 (IPv4 peers appear v4-mapped)
	gro bool // receive offload on: a slot may hold a run of datagrams
	gso bool // send offload works: a message may carry a run

	bufs   [][]byte
	rnames []unix.RawSockaddrInet6
	riov   []unix.Iovec
	rhdr   []unix.Mmsghdr
	rctl   []byte // ctlSpace per receive slot

	// Send messages (ns queued) and their buffer lists, taken from siov in
	// order (nio used); replies[j] is where a reply in message j is built.
	replies [][]byte
	snames  []unix.RawSockaddrInet6
	shdr    []unix.Mmsghdr
	sctl    []byte // ctlSpace per send message
	smeta   []sendMeta
	siov    []unix.Iovec
	nio     int

	// The system call closures and their results, made once so that a
	// batch does not allocate.
	readFn, writeFn func(fd uintptr) bool
	off, ns         int
	res             udpbatch.Result // the last batch call's outcome
}

// sendMeta is what a queued send message carries.
type sendMeta struct {
	act action
	dst netip.AddrPort
	iov int // its first buffer list entry in siov
	// Run: its datagrams (buffer list entries from iov on), their total
	// size, the segment size (the first datagram's), and whether a
	// further datagram no larger than that may join.
	udpoffload.Run
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
		_, gsoErr := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		m.gso = gsoErr == nil
		m.gro = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, fmt.Errorf("socket domain: %w", serr)
	}
	m.v6 = domain == unix.AF_INET6

	slot := wire.MaxFrame
	if m.gro {
		slot = groSlot
	}
	nmsg := 2 * n
	niov := nmsg
	if m.gso {
		niov = max(nmsg, min(n*udpoffload.MaxSegs, 4096))
	}
	mem := make([]byte, n*slot)
	m.bufs = make([][]byte, n)
	m.rnames = make([]unix.RawSockaddrInet6, n)
	m.riov = make([]unix.Iovec, n)
	m.rhdr = make([]unix.Mmsghdr, n)
	m.rctl = make([]byte, n*ctlSpace)
	for i := range n {
		m.bufs[i] = mem[i*slot : (i+1)*slot : (i+1)*slot]
		m.riov[i].Base = &m.bufs[i][0]
		m.riov[i].SetLen(slot)
		h := &m.rhdr[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&m.rnames[i]))
		h.Iov = &m.riov[i]
		h.SetIovlen(1)
		if m.gro {
			h.Control = &m.rctl[i*ctlSpace]
		}
	}
	rmem := make([]byte, nmsg*wire.RelayBoundLen)
	m.replies = make([][]byte, nmsg)
	m.snames = make([]unix.RawSockaddrInet6, nmsg)
	m.shdr = make([]unix.Mmsghdr, nmsg)
	m.sctl = make([]byte, nmsg*ctlSpace)
	m.smeta = make([]sendMeta, nmsg)
	m.siov = make([]unix.Iovec, niov)
	for j := range nmsg {
		m.replies[j] = rmem[j*wire.RelayBoundLen : j*wire.RelayBoundLen : (j+1)*wire.RelayBoundLen]
		m.shdr[j].Hdr.Name = (*byte)(unsafe.Pointer(&m.snames[j]))
	}
	m.readFn = m.recvmmsg
	m.writeFn = m.sendmmsg
	return m, nil
}

// recvmmsg is the body of RawConn.Read: false asks the poller to wait.
// Both batch calls are raw system calls (udpbatch.Recv says why): a
// segmented send that delivers 64 KiB on loopback runs long enough that,
// announced, the runtime's monitor would take the relay's processor away
// from it, and its wake-ups cost more CPU than the relay's own work.
func (m *mmsg) recvmmsg(fd uintptr) bool {
	return udpbatch.Recv(fd, m.rhdr, true, &m.res)
}

// sendmmsg is the body of RawConn.Write, sending shdr[off:ns].
func (m *mmsg) sendmmsg(fd uintptr) bool {
	return udpbatch.Send(fd, m.shdr[m.off:m.ns], true, &m.res)
}

// read fills the receive slots and returns how many arrived.
func (m *mmsg) read() (int, error) {
	for i := range m.rhdr {
		h := &m.rhdr[i].Hdr
		h.Namelen = unix.SizeofSockaddrInet6
		h.Flags = 0
		if m.gro {
			h.SetControllen(ctlSpace)
		}
		m.rhdr[i].Len = 0
	}
	if err := m.rc.Read(m.readFn); err != nil {
		return 0, err
	}
	if m.res.Errno != 0 {
		return 0, m.res.Errno
	}
	return m.res.N, nil
}

// segSize returns the size of the datagrams coalesced in receive slot i,
// or 0 when it holds one datagram.
func (m *mmsg) segSize(i int) int {
	if !m.gro {
		return 0
	}
	n := int(m.rhdr[i].Hdr.Controllen)
	return udpoffload.GROSize(m.rctl[i*ctlSpace : i*ctlSpace+min(n, ctlSpace)])
}

// source decodes the address receive slot i came from.
func (m *mmsg) source(i int) netip.AddrPort { return udpbatch.AddrPort(&m.rnames[i]) }

// setDest writes dst into send slot j, reporting false when the socket's
// family cannot reach it.
func (m *mmsg) setDest(j int, dst netip.AddrPort) bool {
	n := udpbatch.PutAddrPort(&m.snames[j], dst, m.v6)
	m.shdr[j].Hdr.Namelen = n
	return n != 0
}

// full reports whether the send batch must be flushed before another
// datagram is handled.
func (m *mmsg) full() bool { return m.ns == len(m.shdr) || m.nio == len(m.siov) }

// reply returns the buffer for a reply that would become the next send
// message.
func (m *mmsg) reply() []byte { return m.replies[m.ns] }

// queue adds out to the send batch, addressed to dst (a forward) or to the
// source of receive slot i (a reply, sent back to the very address it came
// from, scope included). A forward joins the latest queued run to the same
// address when segmentation allows. The caller checks full first.
func (m *mmsg) queue(act action, out []byte, dst netip.AddrPort, i int) bool {
	if act == actForward && m.gso && m.join(out, dst) {
		return true
	}
	j := m.ns
	if act.toSource() {
		m.snames[j] = m.rnames[i]
		m.shdr[j].Hdr.Namelen = m.rhdr[i].Hdr.Namelen
		dst = netip.AddrPort{} // never joined by a forward
	} else if !m.setDest(j, dst) {
		return false
	}
	iov := &m.siov[m.nio]
	iov.Base = &out[0]
	iov.SetLen(len(out))
	h := &m.shdr[j].Hdr
	h.Iov = iov
	h.SetIovlen(1)
	h.Control = nil
	h.SetControllen(0)
	m.smeta[j] = sendMeta{act: act, dst: dst, iov: m.nio, Run: udpoffload.Run{Size: len(out), Segs: 1, Bytes: len(out), Open: act == actForward}}
	m.nio++
	m.ns++
	return true
}

// join appends a forward to the latest queued message to dst when that
// message is the last one of the batch's run to dst and can take it: the
// datagrams of one segmented send must all be of its segment size, but
// for the last, which may be shorter. Later messages are to other
// addresses, so each address still gets its datagrams in order.
func (m *mmsg) join(out []byte, dst netip.AddrPort) bool {
	for j := m.ns - 1; j >= 0 && j >= m.ns-lookBack; j-- {
		sm := &m.smeta[j]
		if sm.dst != dst {
			continue
		}
		// The message's buffer list must stay contiguous in siov: only
		// the newest message can grow.
		if j != m.ns-1 || !udpoffload.Join(&sm.Run, &m.shdr[j].Hdr, &m.siov[m.nio], m.sctl[j*ctlSpace:(j+1)*ctlSpace], out) {
			return false
		}
		m.nio++
		return true
	}
	return false
}

// flush sends the queued batch; a message the kernel refuses is counted and
// skipped. A segmented message refused as such turns send offload off for
// this socket (its datagrams are lost once; QUIC sends them again).
func (m *mmsg) flush(w *worker) error {
	m.off = 0
	for m.off < m.ns {
		if err := m.rc.Write(m.writeFn); err != nil {
			return err
		}
		if m.res.Errno != 0 {
			sm := &m.smeta[m.off]
			if sm.Segs > 1 && m.res.Errno == unix.EMSGSIZE {
				// Segments above the path MTU (which a spoofed ICMP can
				// lower): sent one by one, the kernel fragments them.
				if err := m.unsegment(w); err != nil {
					return err
				}
				m.off++
				continue
			}
			if sm.Segs > 1 && udpoffload.IsGSOErrno(m.res.Errno) && m.gso {
				m.gso = false
				w.s.log.Warn("relay: segmentation offload refused; sending datagrams one by one", "err", m.res.Errno)
			}
			w.sent(sm.act, sm.Segs, 0, m.res.Errno)
			m.off++
			continue
		}
		for k := m.off; k < m.off+m.res.N; k++ {
			w.sent(m.smeta[k].act, m.smeta[k].Segs, m.smeta[k].Bytes, nil)
		}
		m.off += m.res.N
	}
	m.ns, m.nio = 0, 0
	return nil
}

// unsegment sends the segmented message at off as one datagram per
// buffer list entry.
func (m *mmsg) unsegment(w *worker) error {
	sm, h, ns := &m.smeta[m.off], &m.shdr[m.off].Hdr, m.ns
	h.Control = nil
	h.SetControllen(0)
	h.SetIovlen(1)
	m.ns = m.off + 1
	defer func() { m.ns = ns }()
	for k := range sm.Segs {
		iov := &m.siov[sm.iov+k]
		h.Iov = iov
		if err := m.rc.Write(m.writeFn); err != nil {
			return err
		}
		var err error
		if m.res.Errno != 0 {
			err = m.res.Errno
		}
		w.sent(sm.act, 1, int(iov.Len), err)
	}
	return nil
}

// serveBatch serves a UDP socket in batches.
func (w *worker) serveBatch(c *net.UDPConn) error {
	m, err := newMmsg(c, w.s.cfg.Batch)
	if err != nil {
		w.s.log.Warn("relay: batched I/O unavailable, serving one datagram at a time", "err", err)
		return w.serveUDP(c)
	}
	w.s.log.Debug("relay batching", "batch", w.s.cfg.Batch, "gro", m.gro, "gso", m.gso)
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
		if err := w.handleBatch(m, n); err != nil {
			return err
		}
	}
}

// handleBatch handles the n receive slots filled by the last read, and
// sends what they call for.
func (w *worker) handleBatch(m *mmsg, n int) error {
	now := w.s.cfg.Now()
	nowNs := now.UnixNano()
	w.forget()
	for i := range n {
		size := int(m.rhdr[i].Len)
		if m.rhdr[i].Hdr.Flags&unix.MSG_TRUNC != 0 {
			w.st.received++
			w.st.drop(reasonMalformed) // larger than any frame
			continue
		}
		seg := size
		if g := m.segSize(i); g > 0 && g < size {
			seg = g
		}
		src := m.source(i)
		buf := m.bufs[i][:size]
		w.startRun(uniformRun(buf, seg))
		for off := 0; off < size || off == 0; off += seg {
			if m.full() {
				if err := m.flush(w); err != nil {
					return err
				}
			}
			pkt := buf[off:min(off+seg, size)]
			act, out, dst := w.handle(pkt, src, now, nowNs, m.reply())
			if act != actDrop && !m.queue(act, out, dst, i) {
				w.st.drop(reasonSendFailed)
			}
			if seg == 0 {
				break // an empty datagram
			}
		}
	}
	err := m.flush(w)
	w.s.m.flush(&w.st)
	return err
}
