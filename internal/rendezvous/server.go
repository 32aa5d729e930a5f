package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v4"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/ratelimit"
	"github.com/keymesh/keymesh/internal/replay"
	"github.com/keymesh/keymesh/internal/wire"
)

// Server is a rendezvous server. One Server may serve several sockets at
// once (Serve on each), and several Servers may share one Registry.
type Server struct {
	cfg  Config
	log  *slog.Logger
	id   crypto.PeerID
	keys *keyCache
	// probation holds the keys of senders not yet proven by a cookie.
	probation *keyCache
	replay    *replay.Cache
	limiter   *ratelimit.Limiter
	// keyMissSource and keyMissBudget budget X25519s for uncached keys.
	keyMissSource *ratelimit.Limiter
	keyMissBudget *ratelimit.Budget
	// provenBudget is the key-miss budget of sources in proven.
	provenBudget *ratelimit.Budget
	proven       *provenSources
	stunRate     *ratelimit.Limiter
	registerRate *ratelimit.Limiter
	m            *metrics
	ttl          uint16 // seconds, as sent in Registered
	refresh      uint16
	health       regHealth
	// inProcess is set for the Memory registry, whose calls never block.
	inProcess bool
}

// New checks cfg and returns a server. It opens no socket.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rc := replay.New(2*cfg.MaxSkew, cfg.ReplayCache)
	m, err := newMetrics(cfg.Registerer, cfg.Registry, rc)
	if err != nil {
		return nil, err
	}
	_, inProcess := cfg.Registry.(*discovery.Memory)
	s := &Server{
		inProcess:     inProcess,
		cfg:           cfg,
		log:           cfg.Logger,
		id:            cfg.Identity.ID(),
		keys:          newKeyCache(cfg.KeyCache),
		probation:     newKeyCache(probationSize(cfg.KeyMissBudget)),
		replay:        rc,
		limiter:       cfg.RateLimit.limiter(),
		keyMissSource: cfg.KeyMissRate.limiter(),
		keyMissBudget: ratelimit.NewBudget(cfg.KeyMissBudget, max(1, cfg.KeyMissBudget), cfg.Now().UnixNano()),
		provenBudget:  ratelimit.NewBudget(cfg.KeyMissBudget, max(1, cfg.KeyMissBudget), cfg.Now().UnixNano()),
		proven:        newProvenSources(2 * cfg.RateLimit.Sources),
		stunRate:      cfg.STUNRate.limiter(),
		registerRate:  cfg.RegisterRate.limiter(),
		m:             m,
		ttl:           uint16(cfg.TTL / time.Second),
		refresh:       uint16(cfg.Refresh / time.Second),
	}
	return s, nil
}

// probationSize is one second of the global key-miss budget, at least
// 4096 keys (1 MiB at most with the default budget).
func probationSize(budget float64) int {
	if budget <= 0 || budget > 1<<16 {
		return 1 << 16
	}
	return max(1<<12, int(budget))
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

func (s *Server) readLoop(ctx context.Context, conn net.PacketConn) error {
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
			if ctx.Err() != nil {
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("rendezvous socket: %w", err)
			}
			s.log.Warn("rendezvous read failed", "err", err)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
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

// bodies are reusable reply bodies, so sealing a reply does not allocate.
type bodies struct {
	challenge  wire.Challenge
	registered wire.Registered
	reply      wire.ConnectReply
	punch      wire.Punch
}
