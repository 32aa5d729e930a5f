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

func (s *sinks) run(rec *recorder, off int) {
	for _, c := range s.conns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			pc := ipv4.NewPacketConn(c)
			msgs := make([]ipv4.Message, 64)
			for i := range msgs {
				msgs[i].Buffers = [][]byte{make([]byte, 2048)}
			}
			for {
				n, err := pc.ReadBatch(msgs, 0)
				if err != nil {
					return
				}
				for _, m := range msgs[:n] {
					if m.N >= off {
						rec.note(m.Buffers[0][off:m.N])
					}
				}
			}
		}()
	}
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
	extra  func() // ends what the flows hold on the server, before the sockets close
}

func (u *udpFlows) step(ctx context.Context, rate float64, d time.Duration) (stepResult, error) {
	phase := u.rec.begin()
	msgs := make([]ipv4.Message, u.batch)
	for i := range msgs {
		msgs[i].Buffers = make([][]byte, 1)
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
		if sent >= due {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		n := int(min(uint64(u.batch), due-sent))
		f := u.frames[k]
		u.rec.stamp(f[u.off:], phase)
		for j := range n {
			msgs[j].Buffers[0], msgs[j].Addr = f, u.dst
		}
		w, err := u.pcs[k].WriteBatch(msgs[:n], 0)
		switch {
		case err == nil:
			sent += uint64(w)
		case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOBUFS), errors.Is(err, syscall.EAGAIN):
			sent += uint64(n) // offered, and lost
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
	u := &udpFlows{rec: newRecorder(), dst: dst, off: off, batch: batch}
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
