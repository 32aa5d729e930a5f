package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
	"golang.org/x/net/ipv4"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/ratelimit"
	"github.com/keymesh/keymesh/internal/replay"
	"github.com/keymesh/keymesh/internal/wire"
)

// Server is a rendezvous server. One Server may serve several sockets at
// once (Serve on each), and several Servers may share one Registry.
type Server struct {
	cfg    Config
	log    *slog.Logger
	id     crypto.PeerID
	keys   *crypto.KeyCache
	replay *replay.Cache
	// limiter is RateLimit for requests that proved their source's
	// cookie, unproven RateLimit for the rest (CookieReplies): one bucket
	// each, so that a flood spoofed from a peer's address spends only the
	// second, never what the peer's own proven requests draw on.
	limiter  *ratelimit.Limiter
	unproven *ratelimit.Limiter
	// tunnels is RateLimit per stream relay tunnel (presence address and
	// port) for the proven requests of StreamRelaySources.
	tunnels *ratelimit.Limiter
	// keyMissSource budgets, per source, the X25519s for uncached sender
	// keys; keyMissBudget those for uncached connect targets (keyFor).
	keyMissSource *ratelimit.Limiter
	keyMissBudget *ratelimit.Budget
	stunRate      *ratelimit.Limiter
	registerRate  *ratelimit.Limiter
	// punchRate limits the Punches per target (allowPunch).
	punchRate *ratelimit.Limiter
	punchSeed maphash.Seed
	m         *metrics
	ttl       uint16 // seconds, as sent in Registered
	refresh   uint16
	health    regHealth
	reports   *reports
	// inProcess is set for the Memory registry, whose calls never block.
	inProcess bool
	// epoch is the registry's boot epoch (0: the registry has none), sent
	// in every sealed answer; refreshEpoch keeps it current.
	epoch atomic.Uint64
	// recent are the peers that registered here lately, nudged when the
	// epoch changes (nudge.go); out is the socket nudges leave from.
	recent *recentPeers
	out    atomic.Value // net.PacketConn
	// held are copies of the Punches handed to other homes, for their
	// targets should they register here soon (held.go).
	held *heldPunches
}

// New checks cfg and returns a server. It opens no socket.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rc := replay.New(2*cfg.ClockSkew, cfg.ReplayCache)
	m, err := newMetrics(cfg.Registerer, cfg.Registry, rc)
	if err != nil {
		return nil, err
	}
	tm, err := newTraversalMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	_, inProcess := cfg.Registry.(*discovery.Memory)
	s := &Server{
		inProcess: inProcess,
		cfg:       cfg,
		log:       cfg.Logger,
		id:        cfg.Identity.ID(),
		keys:      crypto.NewKeyCache(cfg.KeyCache),
		replay:    rc,
		limiter:   cfg.RateLimit.limiter(),
		unproven:  cfg.RateLimit.limiter(),
		tunnels: ratelimit.New(ratelimit.Config{PerSecond: cfg.RateLimit.PerSecond, Burst: float64(cfg.RateLimit.Burst),
			MaxSources: cfg.RateLimit.Sources}),
		keyMissSource: cfg.KeyMissRate.limiter(),
		keyMissBudget: ratelimit.NewBudget(cfg.KeyMissBudget, max(1, cfg.KeyMissBudget), cfg.Now().UnixNano()),
		stunRate:      cfg.STUNRate.limiter(),
		registerRate:  cfg.RegisterRate.limiter(),
		punchRate:     cfg.PunchRate.limiter(),
		punchSeed:     maphash.MakeSeed(),
		m:             m,
		ttl:           uint16(cfg.TTL / time.Second),
		refresh:       uint16(cfg.Refresh / time.Second),
		reports:       newReports(cfg.Reports, tm),
		recent:        newRecentPeers(cfg.RecentPeers),
		held:          newHeldPunches(heldMax, heldPerPeer, heldFor),
	}
	s.refreshEpoch(context.Background())
	return s, nil
}

// AllowSTUN takes one token from the STUN answer budget of from's source
// (IPv4 address or IPv6 /64) and reports whether it was there. The main
// socket calls it for every Binding request; give it to the RFC 5780
// responder so that its sockets share the budget.
func (s *Server) AllowSTUN(from netip.Addr) bool {
	if s.stunRate.Allow(from, s.cfg.Now().UnixNano()) {
		return true
	}
	s.m.rejected[reasonSTUNRate].Inc()
	return false
}

// ID returns the server's public key, which peers pin.
func (s *Server) ID() crypto.PeerID { return s.id }

// outPacket is one datagram handle wants sent. Its bytes belong to the
// scratch that handle was given and are valid until its next use.
type outPacket struct {
	to netip.AddrPort
	b  []byte
}

// scratch is the per-goroutine working memory of handle, so the hot path
// does not allocate buffers per packet.
type scratch struct {
	plain   []byte
	msg     []byte
	bufs    [2][]byte
	replies []outPacket
	stunReq stun.Message
	stunOut stun.Message
	ip      [16]byte
	bodies
}

func newScratch() *scratch {
	sc := &scratch{
		plain:   make([]byte, 0, wire.MaxFrame),
		msg:     make([]byte, 0, wire.MaxFrame),
		replies: make([]outPacket, 0, 2),
	}
	for i := range sc.bufs {
		sc.bufs[i] = make([]byte, 0, wire.MaxFrame+64)
	}
	sc.stunReq.Raw = make([]byte, 0, 512)
	sc.stunOut.Raw = make([]byte, 0, 64)
	return sc
}

// Serve reads datagrams from conn and answers them until ctx ends (it then
// returns nil) or conn fails. It runs Config.Workers readers on conn and
// does not close conn. Serve may be called for several conns at once.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	s.out.CompareAndSwap(nil, conn)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Unblock the readers when ctx ends, without closing the caller's conn.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()
	errc := make(chan error, s.cfg.Workers)
	for range s.cfg.Workers {
		go func() { errc <- s.readLoop(ctx, conn) }()
	}
	var first error
	for range s.cfg.Workers {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// udpConn is the allocation-free subset of *net.UDPConn.
type udpConn interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
}

// readBatch is how many datagrams one read takes from a UDP socket.
const readBatch = 32

func (s *Server) readLoop(ctx context.Context, conn net.PacketConn) error {
	// A batch is handled in order by one goroutine: fine while no registry
	// call blocks, but behind a remote registry a connect would wait for
	// every refresh read before it.
	if uc, ok := conn.(*net.UDPConn); ok && s.inProcess {
		return s.readBatches(ctx, uc)
	}
	fast, _ := conn.(udpConn)
	buf := make([]byte, wire.MaxFrame+1) // one byte more tells oversized frames
	sc := newScratch()
	backoff := time.Millisecond
	for {
		var (
			n    int
			from netip.AddrPort
			err  error
		)
		if fast != nil {
			n, from, err = fast.ReadFromUDPAddrPort(buf)
		} else {
			var a net.Addr
			n, a, err = conn.ReadFrom(buf)
			if ua, ok := a.(*net.UDPAddr); ok {
				from = ua.AddrPort()
			}
		}
		if err != nil {
			if stop, rerr := s.readFailed(ctx, err, &backoff); stop {
				return rerr
			}
			continue
		}
		backoff = time.Millisecond
		if !from.IsValid() {
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		for _, out := range s.handle(ctx, sc, from, buf[:n]) {
			var werr error
			if fast != nil {
				_, werr = fast.WriteToUDPAddrPort(out.b, out.to)
			} else {
				_, werr = conn.WriteTo(out.b, net.UDPAddrFromAddrPort(out.to))
			}
			if werr != nil {
				s.log.Debug("rendezvous send failed", "to", out.to, "err", werr)
			}
		}
	}
}

// readFailed says what a read error means to a read loop: stop, returning
// ret, when ctx has ended (nil) or the socket is closed; else read again,
// after waiting backoff (which it doubles, up to a second) when the error
// is not a timeout.
func (s *Server) readFailed(ctx context.Context, err error, backoff *time.Duration) (stop bool, ret error) {
	if ctx.Err() != nil {
		return true, nil
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false, nil
	}
	if errors.Is(err, net.ErrClosed) {
		return true, fmt.Errorf("rendezvous socket: %w", err)
	}
	s.log.Warn("rendezvous read failed", "err", err)
	time.Sleep(*backoff)
	*backoff = min(2**backoff, time.Second)
	return false, nil
}

// readBatches is readLoop for a UDP socket: it takes up to readBatch
// datagrams per system call (recvmmsg on Linux), hands each to handle on
// its own, and sends the replies to the batch together (sendmmsg), so that
// a flood costs fewer system calls and the socket's receive buffer drains
// faster.
func (s *Server) readBatches(ctx context.Context, conn *net.UDPConn) error {
	pc := ipv4.NewPacketConn(conn) // reads IPv6 datagrams too: it only batches
	msgs := make([]ipv4.Message, readBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, wire.MaxFrame+1)} // one byte more tells oversized frames
	}
	// A datagram gets at most two replies (a ConnectReply and a Punch).
	outs := make([]ipv4.Message, 2*readBatch)
	outBufs := make([][]byte, 2*readBatch)
	for i := range outs {
		outs[i].Buffers = make([][]byte, 1)
		outBufs[i] = make([]byte, 0, wire.MaxFrame)
	}
	sc := newScratch()
	backoff := time.Millisecond
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			if stop, rerr := s.readFailed(ctx, err, &backoff); stop {
				return rerr
			}
			continue
		}
		backoff = time.Millisecond
		nout := 0
		for i := range msgs[:n] {
			m := &msgs[i]
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			from := ua.AddrPort()
			if !from.IsValid() {
				continue
			}
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			for _, out := range s.handle(ctx, sc, from, m.Buffers[0][:m.N]) {
				// The replies alias sc: copy them into the batch to send.
				o := &outs[nout]
				outBufs[nout] = append(outBufs[nout][:0], out.b...)
				o.Buffers[0] = outBufs[nout]
				o.Addr = net.UDPAddrFromAddrPort(out.to)
				nout++
			}
		}
		s.sendBatch(pc, outs[:nout])
	}
}

// sendBatch sends the replies to one read batch, with as few system calls
// as the kernel takes (sendmmsg on Linux). A reply that fails is dropped,
// as a lost datagram would be.
func (s *Server) sendBatch(pc *ipv4.PacketConn, outs []ipv4.Message) {
	for len(outs) > 0 {
		n, err := pc.WriteBatch(outs, 0)
		if err != nil {
			s.log.Debug("rendezvous send failed", "to", outs[0].Addr, "err", err)
			n = max(n, 1) // skip the datagram the kernel refused
		}
		outs = outs[n:]
	}
}

// bodies are reusable reply bodies, so sealing a reply does not allocate.
type bodies struct {
	challenge  wire.Challenge
	registered wire.Registered
	reply      wire.ConnectReply
	punch      wire.Punch
	ack        wire.KeepaliveAck
}
