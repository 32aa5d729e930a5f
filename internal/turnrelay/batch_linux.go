package turnrelay

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/keymesh/keymesh/internal/udpbatch"
	"github.com/keymesh/keymesh/internal/udpoffload"
)

// batchReader reads a UDP socket up to readBatch datagrams per system call
// (recvmmsg) into buffers allocated once, and hands them out one by one.
type batchReader struct {
	rc    syscall.RawConn
	bufs  [][]byte
	names []unix.RawSockaddrInet6
	iov   []unix.Iovec
	hdr   []unix.Mmsghdr

	pos    int
	res    udpbatch.Result       // the last read's outcome: res.N datagrams
	readFn func(fd uintptr) bool // recvmmsg, made once so a read does not allocate
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
// It is an announced system call (udpbatch.Recv with raw false), although
// that costs most of what a datagram costs at light load: each time one
// arrives at an idle server, the call wakes the runtime's monitor thread
// (asleep while every processor is idle), which then sleeps and polls
// beside the reader on the same core (perf stat on `loadtest relay` at 20k
// datagrams/s: about one futex call and one nanosleep per wake-up; none
// once raw). Made raw, the server sometimes slept for seconds with its
// receive queue full (a few ms of CPU in 4 s, 70-80% loss at 20k/s, in
// about one run of three on this 2-core machine); with the monitor awake
// that never happened. Not understood yet, so it stays announced.
func (r *batchReader) recvmmsg(fd uintptr) bool {
	return udpbatch.Recv(fd, r.hdr, false, &r.res)
}

// next returns the next datagram and its source (unmapped); the datagram
// is valid until the following call.
func (r *batchReader) next() ([]byte, netip.AddrPort, error) {
	for r.pos >= r.res.N {
		for i := range r.hdr {
			r.hdr[i].Hdr.Namelen = unix.SizeofSockaddrInet6
			r.hdr[i].Hdr.Flags = 0
			r.hdr[i].Len = 0
		}
		r.res.N, r.pos = 0, 0
		if err := r.rc.Read(r.readFn); err != nil {
			return nil, netip.AddrPort{}, err
		}
		if r.res.Errno != 0 {
			return nil, netip.AddrPort{}, &net.OpError{Op: "read", Net: "udp", Err: r.res.Errno}
		}
	}
	i := r.pos
	r.pos++
	return r.bufs[i][:min(int(r.hdr[i].Len), readSlot)], udpbatch.AddrPort(&r.names[i]), nil
}

// pending reports whether datagrams of the last batch are still to be
// handed out (next will not read).
func (r *batchReader) pending() bool { return r.pos < r.res.N }

// relaySock is a relayed UDP socket as batchWriter writes to it.
type relaySock struct {
	rc syscall.RawConn
	v6 bool // AF_INET6: IPv4 peers are written v4-mapped
	// noGSO: the socket does not take segmented sends (no UDP_SEGMENT,
	// or the kernel refused one for want of checksum offload). Every
	// reader's writer may set it.
	noGSO atomic.Bool
}

// newRelaySock returns c's descriptor and family, or nil.
func newRelaySock(c *net.UDPConn) *relaySock {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var domain int
	var serr, gsoErr error
	if err := rc.Control(func(fd uintptr) {
		domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		_, gsoErr = unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	}); err != nil || serr != nil {
		return nil
	}
	r := &relaySock{rc: rc, v6: domain == unix.AF_INET6}
	r.noGSO.Store(gsoErr != nil)
	return r
}

const (
	// ctlSpace is each message's room for its UDP_SEGMENT control
	// message (udpoffload.GSOSpace, 24 bytes on 64-bit Linux), a
	// multiple of 8 so that each stays aligned.
	ctlSpace = 32
)

// sendMeta is what a queued message carries: its socket, destination and
// datagrams (segs buffers from iov on, all of size bytes but for the
// last, which may be shorter and then closes the run).
type sendMeta struct {
	sock *relaySock
	dst  netip.AddrPort
	iov  int
	udpoffload.Run
}

// batchWriter queues the datagrams one read batch relays and sends each
// run of them through one relayed socket with one system call (sendmmsg).
// Consecutive datagrams to the same peer through the same socket, of one
// size (the last may be shorter), go as one segmented message
// (UDP_SEGMENT): the kernel routes and queues them once, and the peer
// still gets one datagram each. A client's frames read in one batch are
// mostly such a run. The payloads stay in the read batch's buffers until
// flush. It belongs to one reader.
type batchWriter struct {
	names []unix.RawSockaddrInet6
	iov   []unix.Iovec
	hdr   []unix.Mmsghdr
	ctl   []byte
	meta  []sendMeta
	n     int // messages queued
	nio   int // buffers queued

	// The sendmmsg call on hdr[off:end], made once so that a flush does
	// not allocate, and its results.
	off, end int
	res      udpbatch.Result
	fn       func(fd uintptr) bool
}

func newBatchWriter() *batchWriter {
	w := &batchWriter{
		names: make([]unix.RawSockaddrInet6, readBatch),
		iov:   make([]unix.Iovec, readBatch),
		hdr:   make([]unix.Mmsghdr, readBatch),
		ctl:   make([]byte, readBatch*ctlSpace),
		meta:  make([]sendMeta, readBatch),
	}
	for i := range w.hdr {
		w.hdr[i].Hdr.Name = (*byte)(unsafe.Pointer(&w.names[i]))
	}
	w.fn = w.sendmmsg
	return w
}

// full reports whether add must wait for a flush.
func (w *batchWriter) full() bool { return w.n == len(w.hdr) || w.nio == len(w.iov) }

// add queues b for dst through sock; false when the socket's family cannot
// reach dst (the caller sends it the ordinary way, which fails as before).
func (w *batchWriter) add(sock *relaySock, b []byte, dst netip.AddrPort) bool {
	if w.join(sock, b, dst) {
		return true
	}
	i := w.n
	n := udpbatch.PutAddrPort(&w.names[i], dst, sock.v6)
	if n == 0 {
		return false
	}
	iov := &w.iov[w.nio]
	if len(b) > 0 {
		iov.Base = &b[0]
	} else {
		iov.Base = nil
	}
	iov.SetLen(len(b))
	h := &w.hdr[i].Hdr
	h.Namelen = n
	h.Iov = iov
	h.SetIovlen(1)
	h.Control = nil
	h.SetControllen(0)
	w.meta[i] = sendMeta{sock: sock, dst: dst, iov: w.nio, Run: udpoffload.Run{Size: len(b), Segs: 1, Bytes: len(b), Open: len(b) > 0}}
	w.nio++
	w.n++
	return true
}

// join appends b to the latest queued message when it continues that
// message's run: the same socket and peer, and a size the segmented send
// takes. Only the latest message grows, so that its buffers stay
// contiguous and each peer gets its datagrams in order.
func (w *batchWriter) join(sock *relaySock, b []byte, dst netip.AddrPort) bool {
	if w.n == 0 {
		return false
	}
	j := w.n - 1
	m := &w.meta[j]
	if m.sock != sock || m.dst != dst || sock.noGSO.Load() ||
		!udpoffload.Join(&m.Run, &w.hdr[j].Hdr, &w.iov[w.nio], w.ctl[j*ctlSpace:(j+1)*ctlSpace], b) {
		return false
	}
	w.nio++
	return true
}

// sendmmsg is the body of RawConn.Write, sending hdr[off:end]. It is a
// raw system call (udpbatch.Send): with MSG_DONTWAIT on a UDP socket it
// never waits, but a run's delivery on loopback or a fast NIC can span two
// of the runtime monitor's ticks, which would hand the goroutine's
// processor to another thread at more cost than the call.
func (w *batchWriter) sendmmsg(fd uintptr) bool {
	return udpbatch.Send(fd, w.hdr[w.off:w.end], true, &w.res)
}

// flush sends what is queued, a run of the same socket per call, and
// returns how many datagrams failed (each is dropped, as a failed write
// of pion's is). A segmented message the kernel refuses as such (segments
// above the path MTU, which a spoofed ICMP can lower, or no checksum
// offload) is sent again one datagram at a time.
func (w *batchWriter) flush() (failed int) {
	for i := 0; i < w.n; {
		sock := w.meta[i].sock
		j := i + 1
		for j < w.n && w.meta[j].sock == sock {
			j++
		}
		w.off, w.end = i, j
		for w.off < w.end {
			if err := sock.rc.Write(w.fn); err != nil {
				for k := w.off; k < w.end; k++ {
					failed += w.meta[k].Segs // the socket is closed
				}
				break
			}
			if e := w.res.Errno; e != 0 {
				m := &w.meta[w.off]
				switch {
				case m.Segs > 1 && (e == unix.EMSGSIZE || udpoffload.IsGSOErrno(e)):
					if e != unix.EMSGSIZE {
						sock.noGSO.Store(true)
					}
					failed += w.unsegment(w.off)
				default:
					failed += m.Segs // the kernel refused hdr[off]; send the rest
				}
				w.off++
				continue
			}
			w.off += w.res.N
		}
		i = j
	}
	for i := range w.n {
		w.meta[i] = sendMeta{}
	}
	for i := range w.nio {
		w.iov[i].Base = nil
	}
	w.n, w.nio = 0, 0
	return failed
}

// unsegment sends segmented message j one datagram at a time and returns
// how many failed. It leaves hdr[j] a single-datagram message.
func (w *batchWriter) unsegment(j int) (failed int) {
	m, h := &w.meta[j], &w.hdr[j].Hdr
	h.Control = nil
	h.SetControllen(0)
	h.SetIovlen(1)
	off, end := w.off, w.end
	w.off, w.end = j, j+1
	for k := range m.Segs {
		h.Iov = &w.iov[m.iov+k]
		if err := m.sock.rc.Write(w.fn); err != nil || w.res.Errno != 0 {
			failed++
		}
	}
	w.off, w.end = off, end
	return failed
}
