package relaybench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/keymesh/keymesh/internal/udpoffload"
)

// socketBuffer is SO_RCVBUF/SO_SNDBUF of the generator's and receivers'
// sockets (the kernel caps it at net.core.rmem_max).
const socketBuffer = 4 << 20

// recorder counts what receivers get in the current phase and buckets its
// latency. Payloads begin with the phase and the send time (nanoseconds
// since start), both big-endian uint64.
type recorder struct {
	start    time.Time
	phase    atomic.Uint64
	received atomic.Uint64
	lat      hist
}

func newRecorder() *recorder { return &recorder{start: time.Now()} }

// stamp writes the phase and the send time into a payload.
func (r *recorder) stamp(p []byte, phase uint64) {
	binary.BigEndian.PutUint64(p, phase)
	binary.BigEndian.PutUint64(p[8:], uint64(time.Since(r.start)))
}

// note counts one received payload of the current phase.
func (r *recorder) note(p []byte) {
	if len(p) < 16 || binary.BigEndian.Uint64(p) != r.phase.Load() {
		return
	}
	r.received.Add(1)
	r.lat.add(time.Since(r.start) - time.Duration(binary.BigEndian.Uint64(p[8:])))
}

// begin starts a phase and returns its number.
func (r *recorder) begin() uint64 {
	r.received.Store(0)
	r.lat.reset()
	return r.phase.Add(1)
}

// end closes the phase after the queues drained: late packets count no more.
func (r *recorder) end() (received uint64, lat []uint64) {
	time.Sleep(300 * time.Millisecond)
	r.phase.Add(1)
	return r.received.Load(), r.lat.snapshot()
}

func listenLoopback() (*net.UDPConn, error) { return listenOn(net.IPv4(127, 0, 0, 1)) }

// listenOn opens a UDP socket on ip (any port) with the benchmark's buffers.
func listenOn(ip net.IP) (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(socketBuffer)
	_ = c.SetWriteBuffer(socketBuffer)
	return c, nil
}

// sinks are the receiving sockets; each hands rec the payload found at
// offset off of every datagram.
type sinks struct {
	conns []*net.UDPConn
	wg    sync.WaitGroup
}

func openSinks(n int) (*sinks, error) {
	s := &sinks{}
	for range n {
		c, err := listenLoopback()
		if err != nil {
			s.close()
			return nil, fmt.Errorf("receiver socket: %w", err)
		}
		s.conns = append(s.conns, c)
	}
	return s, nil
}

// sinkSlots is how many receive slots a receiver's recvmmsg fills, each
// big enough for a whole coalesced run (UDP_GRO).
const sinkSlots = 8

func (s *sinks) run(rec *recorder, off int) {
	for _, c := range s.conns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			// Receivers read as keymesh peers do (internal/pathsock):
			// with UDP_GRO, a run the server sent segmented arrives as
			// one buffer. Datagrams sent one by one arrive one by one.
			gro := enableGRO(c)
			pc := ipv4.NewPacketConn(c)
			msgs := make([]ipv4.Message, sinkSlots)
			for i := range msgs {
				msgs[i].Buffers = [][]byte{make([]byte, 1<<16)}
				if gro {
					msgs[i].OOB = make([]byte, 64)
				}
			}
			for {
				n, err := pc.ReadBatch(msgs, 0)
				if err != nil {
					return
				}
				for _, m := range msgs[:n] {
					b := m.Buffers[0][:m.N]
					seg := len(b)
					if gro {
						if g := udpoffload.GROSize(m.OOB[:m.NN]); g > 0 {
							seg = g
						}
					}
					for len(b) > 0 {
						d := b[:min(seg, len(b))]
						b = b[len(d):]
						if len(d) >= off {
							rec.note(d[off:])
						}
					}
				}
			}
		}()
	}
}

// enableGRO turns UDP_GRO on for c, reporting whether it took.
func enableGRO(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Control(func(fd uintptr) {
		ok = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	})
	return ok
}

func (s *sinks) addr(i int) *net.UDPAddr { return s.conns[i%len(s.conns)].LocalAddr().(*net.UDPAddr) }

func (s *sinks) close() {
	for _, c := range s.conns {
		c.Close()
	}
	s.wg.Wait()
}

// udpFlows sends each flow's frame from its own socket to dst; the payload
// (phase and time) sits at off in the frame.
type udpFlows struct {
	rec    *recorder
	sinks  *sinks
	conns  []*net.UDPConn
	pcs    []*ipv4.PacketConn
	frames [][]byte
	dst    *net.UDPAddr
	off    int
	batch  int
	seg    int    // datagrams per send message: 1, or a segmented run (UDP_SEGMENT)
	extra  func() // ends what the flows hold on the server, before the sockets close
}

// setSegment makes the following steps send runs of n same-size datagrams
// per message with UDP_SEGMENT, as keymesh peers send (n 1: one by one).
func (u *udpFlows) setSegment(n int) { u.seg = max(1, n) }

func (u *udpFlows) step(ctx context.Context, rate float64, d time.Duration) (stepResult, error) {
	phase := u.rec.begin()
	seg := max(1, u.seg)
	// A sendmmsg carries batch datagrams: batch messages of one, or
	// batch/seg messages of a run of seg (at least one).
	per := max(1, u.batch/seg)
	msgs := make([]ipv4.Message, per)
	for i := range msgs {
		msgs[i].Buffers = make([][]byte, seg)
		if seg > 1 {
			msgs[i].OOB = make([]byte, udpoffload.GSOSpace)
		}
	}
	start := time.Now()
	target := stepTarget(rate, d)
	var sent uint64
	k := 0
	for sent < target {
		el := time.Since(start)
		if el >= 2*d+time.Second || ctx.Err() != nil {
			break // hopelessly behind
		}
		due := min(target, uint64(el.Seconds()*rate)+1)
		// Whole runs only, but for the step's last datagrams.
		if sent >= due || (due-sent < uint64(seg) && target-sent >= uint64(seg)) {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		f := u.frames[k]
		u.rec.stamp(f[u.off:], phase)
		left := due - sent
		nm := 0
		var n uint64
		for nm < per && left > 0 {
			r := int(min(uint64(seg), left))
			if r < seg && nm > 0 {
				break // a short run goes alone, as the step's last
			}
			m := &msgs[nm]
			m.Buffers = m.Buffers[:r]
			for j := range r {
				m.Buffers[j] = f
			}
			m.Addr = u.dst
			if seg > 1 {
				m.OOB = m.OOB[:0]
				if r > 1 {
					m.OOB = m.OOB[:udpoffload.GSOSpace]
					udpoffload.PutGSO(m.OOB, len(f))
				}
			}
			nm++
			n += uint64(r)
			left -= uint64(r)
		}
		w, err := u.pcs[k].WriteBatch(msgs[:nm], 0)
		switch {
		case err == nil && w == nm:
			sent += n
		case err == nil:
			for _, m := range msgs[:w] {
				sent += uint64(len(m.Buffers))
			}
		case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOBUFS), errors.Is(err, syscall.EAGAIN):
			sent += n // offered, and lost
		default:
			return stepResult{}, fmt.Errorf("send: %w", err)
		}
		k = (k + 1) % len(u.frames)
	}
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return stepResult{}, ctx.Err()
	}
	got, lat := u.rec.end()
	return stepResult{target: target, sent: sent, received: got, elapsed: elapsed, lat: lat}, nil
}

// stepTarget is how many packets a step of d at rate sends.
func stepTarget(rate float64, d time.Duration) uint64 {
	return uint64(max(1, rate*d.Seconds()+0.5))
}

func (u *udpFlows) close() {
	if u.extra != nil {
		u.extra()
	}
	for _, c := range u.conns {
		c.Close()
	}
	if u.sinks != nil {
		u.sinks.close()
	}
}

// newUDPFlows opens one sender socket per flow, on src.
func newUDPFlows(src net.IP, n, batch int, dst *net.UDPAddr, off int) (*udpFlows, error) {
	u := &udpFlows{rec: newRecorder(), dst: dst, off: off, batch: batch, seg: 1}
	for range n {
		c, err := listenOn(src)
		if err != nil {
			u.close()
			return nil, fmt.Errorf("sender socket (raise `ulimit -n`?): %w", err)
		}
		u.conns = append(u.conns, c)
		u.pcs = append(u.pcs, ipv4.NewPacketConn(c))
	}
	return u, nil
}
