package relayflows

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/relay"
	"github.com/keymesh/keymesh/internal/relayclient"
	"github.com/keymesh/keymesh/internal/sockopt"
	"github.com/keymesh/keymesh/internal/wire"
)

// relayOverhead is what a RelaySend adds to a payload.
const relayOverhead = wire.RelaySendOverhead

// flowLab is an in-process ticket relay on loopback with senders and
// recipients ("sinks") around it.
type flowLab struct {
	cfg       relayFlowsConfig
	srv       *relay.Server
	reg       *prometheus.Registry
	relayAddr *net.UDPAddr
	stop      context.CancelFunc
	wg        sync.WaitGroup

	senders []*flowSender
	sinks   []*flowSink
	flows   []flowSpec
	sinkWG  sync.WaitGroup

	phase    atomic.Uint64
	received atomic.Uint64
}

// flowSpec is one flow: its frames (relayed and raw) and its recipient.
type flowSpec struct {
	viaRelay []byte // RelaySend with the recipient's ticket
	raw      []byte // Data frame, the same payload straight to the recipient
	sink     *net.UDPAddr
}

type flowSender struct {
	conn  *net.UDPConn
	pc    *ipv4.PacketConn
	flows []int
	next  int
}

type flowSink struct {
	conn *net.UDPConn
	id   *crypto.Identity
}

func newFlowLab(ctx context.Context, cfg relayFlowsConfig) (*flowLab, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	keys, err := crypto.NewTicketKeys(1, map[byte][]byte{1: key}, nil)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	// The per-source limiters stay on, so that their cost is measured, but
	// never bite (the lab binds thousands of tickets from one address).
	srv, err := relay.New(relay.Config{Keys: keys, Registerer: reg,
		RateLimit: relay.RateLimit{Rate: 1e12, Burst: 1e12, BindRate: 1e12, BindBurst: 1e12,
			ChallengeRate: 1e12, ChallengeBurst: 1e12, BindsPerSecond: -1}})
	if err != nil {
		return nil, err
	}
	conns, err := sockopt.ListenUDPGroup(ctx, "127.0.0.1:0", cfg.relaySockets)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	lab := &flowLab{cfg: cfg, srv: srv, reg: reg, relayAddr: conns[0].LocalAddr().(*net.UDPAddr), stop: cancel}
	for _, c := range conns {
		flowSetBuffers(c, cfg.buffer)
		lab.wg.Add(1)
		go func() {
			defer lab.wg.Done()
			defer c.Close()
			if err := srv.Serve(sctx, c); err != nil {
				fmt.Fprintln(os.Stderr, "relayflows: relay:", err)
			}
		}()
	}
	return lab, nil
}

func flowSetBuffers(c *net.UDPConn, n int) {
	_ = c.SetReadBuffer(n)
	_ = c.SetWriteBuffer(n)
}

func (l *flowLab) close() {
	l.teardown()
	l.stop()
	l.wg.Wait()
}

// teardown closes the senders and sinks of the last setup.
func (l *flowLab) teardown() {
	for _, s := range l.senders {
		s.conn.Close()
	}
	for _, s := range l.sinks {
		s.conn.Close()
	}
	l.sinkWG.Wait()
	l.senders, l.sinks, l.flows = nil, nil, nil
}

func flowListen(buffer int) (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	flowSetBuffers(c, buffer)
	return c, nil
}

// setup makes n flows: min(n, senders) sender sockets, min(n, sinks)
// recipient sockets, and one ticket per flow, each from a real bind.
func (l *flowLab) setup(ctx context.Context, n int) error {
	l.teardown()
	cfg := l.cfg
	for range min(n, cfg.sinks) {
		c, err := flowListen(cfg.buffer)
		if err != nil {
			return fmt.Errorf("sink socket: %w", err)
		}
		id, err := crypto.GenerateIdentity(nil)
		if err != nil {
			return err
		}
		l.sinks = append(l.sinks, &flowSink{conn: c, id: id})
	}
	for range min(n, cfg.senders) {
		c, err := flowListen(cfg.buffer)
		if err != nil {
			return fmt.Errorf("sender socket (raise `ulimit -n`?): %w", err)
		}
		l.senders = append(l.senders, &flowSender{conn: c, pc: ipv4.NewPacketConn(c)})
	}

	// Tickets: flow i is received by sink i % R, which binds once per flow.
	tickets := make([][]byte, n)
	start := time.Now()
	errc := make(chan error, len(l.sinks))
	for r, s := range l.sinks {
		go func() {
			for i := r; i < n; i += len(l.sinks) {
				bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				b, err := relayclient.Bind(bctx, s.conn, l.relayAddr, s.id)
				cancel()
				if err != nil {
					errc <- err
					return
				}
				tickets[i] = b.Ticket
			}
			errc <- nil
		}()
	}
	for range l.sinks {
		if err := <-errc; err != nil {
			return fmt.Errorf("binding %d tickets: %w", n, err)
		}
	}
	fmt.Fprintf(os.Stderr, "  %6d flows: %d senders, %d recipients, %d tickets bound in %v\n",
		n, len(l.senders), len(l.sinks), n, time.Since(start).Round(time.Millisecond))

	payload := make([]byte, cfg.size)
	l.flows = make([]flowSpec, n)
	for i := range n {
		sender := l.senders[i%len(l.senders)]
		sender.flows = append(sender.flows, i)
		tag := uint64(i)
		l.flows[i] = flowSpec{
			viaRelay: wire.AppendRelaySend(nil, tickets[i], tag, payload),
			raw:      wire.AppendData(nil, tag, payload),
			sink:     l.sinks[i%len(l.sinks)].conn.LocalAddr().(*net.UDPAddr),
		}
	}
	for _, s := range l.sinks {
		l.sinkWG.Add(1)
		go l.runSink(s)
	}
	return nil
}

// runSink counts the datagrams of the current phase that reach a sink.
func (l *flowLab) runSink(s *flowSink) {
	defer l.sinkWG.Done()
	pc := ipv4.NewPacketConn(s.conn)
	msgs := make([]ipv4.Message, 64)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			return
		}
		phase := l.phase.Load()
		got := uint64(0)
		for _, m := range msgs[:n] {
			b := m.Buffers[0][:m.N]
			if len(b) >= wire.DataOverhead+8 && binary.BigEndian.Uint64(b[wire.DataOverhead:]) == phase {
				got++
			}
		}
		l.received.Add(got)
	}
}

// measure runs the generator for one run over the current flows.
func (l *flowLab) measure(ctx context.Context, n int, viaRelay bool) (flowResult, error) {
	cfg := l.cfg
	phase := l.phase.Add(1)
	for _, f := range l.flows {
		binary.BigEndian.PutUint64(f.viaRelay[relayOverhead:], phase)
		binary.BigEndian.PutUint64(f.raw[wire.DataOverhead:], phase)
	}
	l.received.Store(0)
	runtime.GC()
	cpu0, drops0, relay0 := flowCPUTime(), flowRcvbufErrors(), l.relayDrops()

	rctx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	var sent atomic.Uint64
	var wg sync.WaitGroup
	start := time.Now()
	for g := range cfg.generators {
		var mine []*flowSender
		for i := g; i < len(l.senders); i += cfg.generators {
			mine = append(mine, l.senders[i])
		}
		if len(mine) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent.Add(l.generate(rctx, mine, viaRelay, cfg.rate/float64(cfg.generators)))
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return flowResult{}, ctx.Err()
	}
	time.Sleep(300 * time.Millisecond) // let the queues drain
	res := flowResult{
		sent:         sent.Load(),
		received:     l.received.Load(),
		elapsed:      elapsed,
		size:         cfg.size,
		cpu:          flowCPUTime() - cpu0,
		rcvbufErrors: flowRcvbufErrors() - drops0,
	}
	if viaRelay {
		res.relayDrops = l.relayDrops() - relay0
	}
	return res, nil
}

// generate sends from senders round robin, batch by batch, paced to rate
// (0: unpaced), until ctx ends; it returns how many datagrams the kernel
// took.
func (l *flowLab) generate(ctx context.Context, senders []*flowSender, viaRelay bool, rate float64) uint64 {
	batch := l.cfg.batch
	msgs := make([]ipv4.Message, batch)
	for i := range msgs {
		msgs[i].Buffers = make([][]byte, 1)
	}
	start := time.Now()
	var sent uint64
	k := 0
	for ctx.Err() == nil {
		n := batch
		if rate > 0 {
			due := uint64(time.Since(start).Seconds() * rate)
			if sent >= due {
				time.Sleep(100 * time.Microsecond)
				continue
			}
			n = int(min(uint64(batch), due-sent))
		}
		s := senders[k]
		k = (k + 1) % len(senders)
		for j := range n {
			f := &l.flows[s.flows[s.next]]
			s.next = (s.next + 1) % len(s.flows)
			if viaRelay {
				msgs[j].Buffers[0], msgs[j].Addr = f.viaRelay, l.relayAddr
			} else {
				msgs[j].Buffers[0], msgs[j].Addr = f.raw, f.sink
			}
		}
		w, err := s.pc.WriteBatch(msgs[:n], 0)
		if err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			if ctx.Err() == nil {
				fmt.Fprintln(os.Stderr, "relayflows: send:", err)
			}
			return sent
		}
		sent += uint64(max(w, 0))
	}
	return sent
}

// relayDrops sums the relay's dropped-packet counters.
func (l *flowLab) relayDrops() uint64 {
	mfs, err := l.reg.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == "keymesh_relay_dropped_packets_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return uint64(sum)
}

func flowCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rcvbufErrors reads the kernel's count of UDP datagrams dropped for a full
// receive buffer (all sockets of this network namespace).
func flowRcvbufErrors() uint64 {
	f, err := os.Open("/proc/net/snmp")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var names []string
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, name := range names {
			if name == "RcvbufErrors" && i < len(fields) {
				v, _ := strconv.ParseUint(fields[i], 10, 64)
				return v
			}
		}
	}
	return 0
}
