package turnrelay

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/keymesh/keymesh/internal/udpbatch"
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
// It is a raw system call (udpbatch.Recv says why). Announced, it was
// most of what a datagram cost at light load: each time one arrived at an
// idle server, the call woke the runtime's monitor thread, which sleeps
// while every processor is idle, and the monitor then slept and polled
// beside the reader on the same core (a futex wake, nanosleeps and a futex
// wait per arrival; measured with perf stat on `loadtest relay` at 20k
// datagrams/s, none of them once raw).
func (r *batchReader) recvmmsg(fd uintptr) bool {
	return udpbatch.Recv(fd, r.hdr, true, &r.res)
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
}

// newRelaySock returns c's descriptor and family, or nil.
func newRelaySock(c *net.UDPConn) *relaySock {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var domain int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	}); err != nil || serr != nil {
		return nil
	}
	return &relaySock{rc: rc, v6: domain == unix.AF_INET6}
}

// batchWriter queues the datagrams one read batch relays and sends each
// run of them through one relayed socket with one system call (sendmmsg).
// The payloads stay in the read batch's buffers until flush. It belongs to
// one reader.
type batchWriter struct {
	names []unix.RawSockaddrInet6
	iov   []unix.Iovec
	hdr   []unix.Mmsghdr
	socks []*relaySock
	n     int

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
		socks: make([]*relaySock, readBatch),
	}
	for i := range w.hdr {
		w.hdr[i].Hdr.Name = (*byte)(unsafe.Pointer(&w.names[i]))
		w.hdr[i].Hdr.Iov = &w.iov[i]
		w.hdr[i].Hdr.SetIovlen(1)
	}
	w.fn = w.sendmmsg
	return w
}

// full reports whether add must wait for a flush.
func (w *batchWriter) full() bool { return w.n == len(w.hdr) }

// add queues b for dst through sock; false when the socket's family cannot
// reach dst (the caller sends it the ordinary way, which fails as before).
func (w *batchWriter) add(sock *relaySock, b []byte, dst netip.AddrPort) bool {
	i := w.n
	n := udpbatch.PutAddrPort(&w.names[i], dst, sock.v6)
	if n == 0 {
		return false
	}
	w.hdr[i].Hdr.Namelen = n
	if len(b) > 0 {
		w.iov[i].Base = &b[0]
	} else {
		w.iov[i].Base = nil
	}
	w.iov[i].SetLen(len(b))
	w.socks[i] = sock
	w.n++
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
// of pion's is).
func (w *batchWriter) flush() (failed int) {
	for i := 0; i < w.n; {
		sock := w.socks[i]
		j := i + 1
		for j < w.n && w.socks[j] == sock {
			j++
		}
		w.off, w.end = i, j
		for w.off < w.end {
			if err := sock.rc.Write(w.fn); err != nil {
				failed += w.end - w.off // the socket is closed
				break
			}
			if w.res.Errno != 0 {
				failed++ // the kernel refused hdr[off]; send the rest
				w.off++
				continue
			}
			w.off += w.res.N
		}
		i = j
	}
	for i := range w.n {
		w.iov[i].Base, w.socks[i] = nil, nil
	}
	w.n = 0
	return failed
}
