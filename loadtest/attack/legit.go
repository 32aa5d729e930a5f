package attack

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/relayclient"
	"github.com/keymesh/keymesh/internal/rzclient"
	"github.com/keymesh/keymesh/internal/wire"
)

// Op is a kind of legitimate operation the population keeps doing.
type Op string

// The legitimate operations. Register, Connect and Bind carry the
// thresholds; Relay is reported.
const (
	OpRegister Op = "register" // a new peer registers (cookie round trip included)
	OpConnect  Op = "connect"  // a registered peer asks for another (found)
	OpBind     Op = "bind"     // a new socket binds to the relay and gets a ticket
	OpRelay    Op = "relay"    // a datagram through the ticket relay arrives
	OpTURN     Op = "turn"     // a registered peer makes (and releases) a TURN allocation
)

// Ops lists the operations in report order.
var Ops = []Op{OpRegister, OpConnect, OpBind, OpRelay, OpTURN}

// opTimeout is how long one legitimate operation may take before it counts
// as failed.
const opTimeout = 3 * time.Second

// OpResult is the outcome of one kind of operation during an attack.
type OpResult struct {
	Attempts int           `json:"attempts"`
	OK       int           `json:"ok"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
	// FirstError is one failure's error, for the report.
	FirstError string `json:"first_error,omitempty"`
}

// SuccessRate is OK/Attempts (1 with no attempt).
func (r OpResult) SuccessRate() float64 {
	if r.Attempts == 0 {
		return 1
	}
	return float64(r.OK) / float64(r.Attempts)
}

type opStats struct {
	mu       sync.Mutex
	attempts int
	lat      []time.Duration
	firstErr error
}

func (s *opStats) record(d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts++
	if err != nil {
		if s.firstErr == nil {
			s.firstErr = err
		}
		return
	}
	s.lat = append(s.lat, d)
}

func (s *opStats) result() OpResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := OpResult{Attempts: s.attempts, OK: len(s.lat)}
	lat := slices.Clone(s.lat)
	slices.Sort(lat)
	r.P50, r.P99 = percentile(lat, 0.50), percentile(lat, 0.99)
	if s.firstErr != nil {
		r.FirstError = s.firstErr.Error()
	}
	return r
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted)) + 0.5)
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

// population is the legitimate peers: long-lived registered peers that
// connect to each other, two relay-bound sockets that send to each other,
// and fresh peers made for each registration and bind.
type population struct {
	lab  *Lab
	srv  *servers
	next atomic.Uint32 // next legitimate source address

	peers []*legitPeer

	relayA, relayB *net.UDPConn
	ticketB        []byte
	relayMu        sync.Mutex
	relayWait      map[uint64]chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type legitPeer struct {
	id         *crypto.Identity
	conn       *net.UDPConn
	client     *rzclient.Client
	registered chan struct{}
	once       sync.Once
	rxBytes    atomic.Int64 // UDP payload received
	shared     *[32]byte    // the box key it shares with the rendezvous

	kaMu   sync.Mutex
	kaWait []chan struct{} // keepalive calls waiting for a KeepaliveAck
}

// legAddr returns a fresh source address of the legitimate namespace.
func (p *population) legAddr() netip.AddrPort {
	i := p.next.Add(1)
	i %= 250 * 250
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 65, byte(i/250 + 1), byte(i%250 + 1)}), 0)
}

// newPopulation starts n registered peers and a relay pair; it returns once
// all are registered and bound (or fails after a deadline).
func newPopulation(ctx context.Context, lab *Lab, srv *servers, n int) (*population, error) {
	p := &population{lab: lab, srv: srv, relayWait: map[uint64]chan struct{}{}}
	p.next.Store(rand.Uint32N(250 * 250))
	p.ctx, p.cancel = context.WithCancel(context.Background())
	for range n {
		lp, err := p.newPeer()
		if err != nil {
			p.close()
			return nil, err
		}
		p.peers = append(p.peers, lp)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			_ = lp.client.Run(p.ctx)
		}()
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, lp := range p.peers {
		select {
		case <-lp.registered:
		case <-wctx.Done():
			p.close()
			return nil, fmt.Errorf("attack: legitimate peers did not register before the attack: %v", lp.client.Status().LastError)
		}
	}
	if err := p.startRelayPair(wctx); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *population) newPeer() (*legitPeer, error) {
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return nil, err
	}
	conn, err := listenUDP(p.lab.Leg, p.legAddr())
	if err != nil {
		return nil, err
	}
	shared, err := id.SharedKey(p.srv.rzKey)
	if err != nil {
		conn.Close()
		return nil, err
	}
	lp := &legitPeer{id: id, conn: conn, registered: make(chan struct{}), shared: shared}
	local := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	lp.client, err = rzclient.New(rzclient.Config{
		Identity:   id,
		Server:     p.srv.rzAddr,
		ServerKey:  p.srv.rzKey,
		AllowAny:   true,
		Token:      p.srv.token,
		Candidates: func() []netip.AddrPort { return []netip.AddrPort{local} },
		NAT:        func() wire.NAT { return wire.NATNone },
		Send: func(b []byte, to netip.AddrPort) error {
			_, err := conn.WriteToUDPAddrPort(b, to)
			return err
		},
		OnRegistered: func(wire.Registered) { lp.once.Do(func() { close(lp.registered) }) },
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		readFrames(conn, func(frame []byte, from netip.AddrPort) {
			lp.rxBytes.Add(int64(len(frame)))
			lp.noteFrame(frame, p.srv.rzKey)
			lp.client.HandleFrame(frame, from)
		})
	}()
	return lp, nil
}

// startRelayPair binds two sockets to the relay; B's reader signals the
// relayed datagrams it gets.
func (p *population) startRelayPair(ctx context.Context) error {
	var err error
	if p.relayA, err = listenUDP(p.lab.Leg, p.legAddr()); err != nil {
		return err
	}
	if p.relayB, err = listenUDP(p.lab.Leg, p.legAddr()); err != nil {
		return err
	}
	relayUDP := net.UDPAddrFromAddrPort(p.srv.relayAddr)
	idB, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return err
	}
	b, err := relayclient.Bind(ctx, p.relayB, relayUDP, idB)
	if err != nil {
		return fmt.Errorf("attack: legitimate relay bind before the attack: %w", err)
	}
	p.ticketB = b.Ticket
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		readFrames(p.relayB, func(frame []byte, _ netip.AddrPort) {
			_, payload, err := wire.ParseData(frame)
			if err != nil || len(payload) < 8 {
				return
			}
			seq := binary.BigEndian.Uint64(payload)
			p.relayMu.Lock()
			if ch, ok := p.relayWait[seq]; ok {
				close(ch)
				delete(p.relayWait, seq)
			}
			p.relayMu.Unlock()
		})
	}()
	return nil
}

func (p *population) close() {
	p.cancel()
	for _, lp := range p.peers {
		lp.conn.Close()
	}
	for _, c := range []*net.UDPConn{p.relayA, p.relayB} {
		if c != nil {
			c.Close()
		}
	}
	p.wg.Wait()
}

// do runs one operation and returns its error (nil: success).
func (p *population) do(ctx context.Context, op Op) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	switch op {
	case OpRegister:
		return p.register(ctx)
	case OpConnect:
		a := p.peers[rand.IntN(len(p.peers))]
		b := p.peers[rand.IntN(len(p.peers))]
		for b == a {
			b = p.peers[rand.IntN(len(p.peers))]
		}
		r, err := a.client.ConnectPeer(ctx, b.id.ID())
		if err != nil {
			return err
		}
		if !r.Found {
			return errors.New("connect: registered peer not found")
		}
		return nil
	case OpBind:
		conn, err := listenUDP(p.lab.Leg, p.legAddr())
		if err != nil {
			return err
		}
		defer conn.Close()
		id, err := crypto.GenerateIdentity(nil)
		if err != nil {
			return err
		}
		_, err = relayclient.Bind(ctx, conn, net.UDPAddrFromAddrPort(p.srv.relayAddr), id)
		return err
	case OpRelay:
		return p.relayOnce(ctx)
	case OpTURN:
		st := p.peers[rand.IntN(len(p.peers))].client.Status()
		if st.TURNUser == "" {
			return errors.New("turn: the rendezvous handed out no TURN credentials")
		}
		conn, err := listenUDP(p.lab.Leg, p.legAddr())
		if err != nil {
			return err
		}
		defer conn.Close()
		deadline, _ := ctx.Deadline()
		_, err = turnAllocate(conn, p.srv.turnAddr, st.TURNUser, st.TURNPass, true, deadline)
		return err
	}
	return fmt.Errorf("unknown op %q", op)
}

// register makes a new peer register and waits for its Registered.
func (p *population) register(ctx context.Context) error {
	lp, err := p.newPeer()
	if err != nil {
		return err
	}
	defer lp.conn.Close()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = lp.client.Run(rctx) }()
	select {
	case <-lp.registered:
		return nil
	case <-ctx.Done():
		if e := lp.client.Status().LastError; e != "" {
			return fmt.Errorf("register: %s", e)
		}
		return fmt.Errorf("register: no Registered within %s", opTimeout)
	}
}

var relaySeq atomic.Uint64

// relayOnce sends one datagram from A through the relay to B's ticket and
// waits for B to get it (one resend after a second).
func (p *population) relayOnce(ctx context.Context) error {
	seq := relaySeq.Add(1)
	ch := make(chan struct{})
	p.relayMu.Lock()
	p.relayWait[seq] = ch
	p.relayMu.Unlock()
	defer func() {
		p.relayMu.Lock()
		delete(p.relayWait, seq)
		p.relayMu.Unlock()
	}()
	payload := binary.BigEndian.AppendUint64(make([]byte, 0, 64), seq)
	payload = append(payload, make([]byte, 56)...)
	frame := wire.AppendRelaySend(nil, p.ticketB, seq, payload)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if _, err := p.relayA.WriteToUDPAddrPort(frame, p.srv.relayAddr); err != nil {
			return err
		}
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return errors.New("relay: datagram not delivered")
		case <-t.C:
		}
	}
}

// drive runs each operation at rate per second until ctx ends, and returns
// the results of the operations started before it ended (waiting for them).
func (p *population) drive(ctx context.Context, rate float64) map[Op]OpResult {
	stats := map[Op]*opStats{}
	var wg sync.WaitGroup
	for _, op := range Ops {
		st := &opStats{}
		stats[op] = st
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(time.Duration(float64(time.Second) / rate))
			defer t.Stop()
			var inner sync.WaitGroup
			defer inner.Wait()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				inner.Add(1)
				go func() {
					defer inner.Done()
					t0 := time.Now()
					err := p.do(p.ctx, op)
					st.record(time.Since(t0), err)
				}()
			}
		}()
	}
	wg.Wait()
	out := map[Op]OpResult{}
	for op, st := range stats {
		out[op] = st.result()
	}
	return out
}

// readFrames hands each datagram conn reads to handle (frame is valid until
// handle returns) until conn is closed.
func readFrames(conn *net.UDPConn, handle func(frame []byte, from netip.AddrPort)) {
	buf := make([]byte, wire.MaxFrame)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		handle(buf[:n], from)
	}
}
