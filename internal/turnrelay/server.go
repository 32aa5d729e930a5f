package turnrelay

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"syscall"

	"github.com/keymesh/keymesh/internal/addrpolicy"
	"github.com/keymesh/keymesh/internal/ratelimit"
	"github.com/keymesh/keymesh/internal/sockopt"
	"github.com/pion/turn/v5"
)

// Server is a TURN server over the caller's sockets.
type Server struct {
	cfg     Config
	log     *slog.Logger
	quota   *quota
	metrics *metrics
	turn    *turn.Server
	peers   *addrpolicy.Policy
	own     *ownPorts
	// advertisePublic: the advertised address passes addrpolicy's
	// defaults, so clients may relay to each other's allocations on it.
	advertisePublic bool
	// ownAllowed: the relay and advertised addresses an AllowDestinations
	// range holds, which the relayed sockets send to at any port.
	ownAllowed map[netip.Addr]bool

	tcp *tcpConns // open TCP connections, per source and in all

	channels *channelTable // pion's channel bindings of UDP clients (fastpath.go)
	guards   []*guardConn  // the UDP sockets, as pion reads and writes them

	allocations *ratelimit.Limiter // authenticated Allocates per source
	bindings    *ratelimit.Limiter // Binding answers per source
	challenges  *ratelimit.Limiter // oversize 401/438 per source

	integrity *ratelimit.Budget // the guard's integrity checks (checkIntegrity)
	verified  *verifiedSources  // sources checked without that budget
}

// New starts a TURN server over cfg's sockets: one reader goroutine per
// PacketConn and one accept loop per Listener, all sharing the credential
// check, the quota and the metrics.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		quota:   newQuota(cfg.MaxAllocationsPerUser, cfg.MaxAllocations),
		metrics: m,
		peers:   addrpolicy.New(cfg.AllowDestinations, append([]netip.Addr{cfg.RelayIP, cfg.AdvertiseIP}, cfg.OwnAddrs...)),
		own:     newOwnPorts(),
		tcp:     newTCPConns(),

		channels: newChannelTable(),

		advertisePublic: addrpolicy.New(nil, nil).Allowed(cfg.AdvertiseIP),
		ownAllowed:      make(map[netip.Addr]bool),

		allocations: ratelimit.New(ratelimit.Config{PerSecond: cfg.AllocationRate, Burst: cfg.AllocationBurst}),
		bindings:    ratelimit.New(ratelimit.Config{PerSecond: cfg.BindingRate, Burst: cfg.BindingBurst}),
		challenges:  ratelimit.New(ratelimit.Config{PerSecond: cfg.ChallengeRate, Burst: cfg.ChallengeBurst}),

		integrity: ratelimit.NewBudget(cfg.IntegrityRate, cfg.IntegrityBurst, cfg.Now().UnixNano()),
		verified:  newVerifiedSources(int64(verifiedTTL), maxVerifiedSources),
	}
	for _, a := range []netip.Addr{cfg.RelayIP, cfg.AdvertiseIP} {
		for _, p := range cfg.AllowDestinations {
			if p.Contains(a) {
				s.ownAllowed[a] = true
			}
		}
	}
	gen := &relayGenerator{
		static: &turn.RelayAddressGeneratorStatic{
			RelayAddress: net.IP(cfg.AdvertiseIP.AsSlice()),
			Address:      cfg.RelayIP.String(),
		},
		quota:   s.quota,
		metrics: m,
		s:       s,
	}
	sc := turn.ServerConfig{
		Realm:         cfg.Realm,
		AuthHandler:   s.authenticate,
		QuotaHandler:  s.checkQuota,
		LoggerFactory: pionLogs{l: cfg.Logger},
		// pion's default when zero.
		ChannelBindTimeout: cfg.channelLifetime,
		EventHandler: turn.EventHandler{
			OnAuth:              s.onAuth,
			OnAllocationCreated: s.onAllocationCreated,
			OnAllocationDeleted: s.onAllocationDeleted,
			OnAllocationError:   s.onRequestError,
			OnChannelCreated:    s.onChannelCreated,
			OnChannelDeleted:    s.onChannelDeleted,
		},
	}
	for _, pc := range cfg.PacketConns {
		if raw, ok := pc.(syscall.Conn); ok && cfg.SocketBuffer > 0 {
			if err := sockopt.SetBuffers(raw, cfg.SocketBuffer, cfg.SocketBuffer); err != nil {
				s.log.Warn("turn socket buffers not set", "addr", pc.LocalAddr().String(), "err", err)
			}
		}
		if u, ok := pc.(*net.UDPConn); ok && cfg.WritersPerSocket > 0 {
			split, err := newSplitConn(u, cfg.WritersPerSocket)
			if err != nil {
				s.closeSplit(sc.PacketConnConfigs)
				return nil, fmt.Errorf("turnrelay: %w", err)
			}
			pc = split
		}
		g := newGuardConn(s, pc)
		s.guards = append(s.guards, g)
		sc.PacketConnConfigs = append(sc.PacketConnConfigs, turn.PacketConnConfig{
			PacketConn:            g,
			RelayAddressGenerator: gen,
			PermissionHandler:     s.permitPeer,
		})
	}
	for _, ln := range cfg.Listeners {
		sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{
			Listener:              guardListener{Listener: ln, s: s},
			RelayAddressGenerator: gen,
			PermissionHandler:     s.permitPeer,
		})
	}
	ts, err := turn.NewServer(sc)
	if err != nil {
		s.closeSplit(sc.PacketConnConfigs)
		return nil, fmt.Errorf("turnrelay: start pion server: %w", err)
	}
	s.turn = ts
	s.log.Info("turn server started", "realm", cfg.Realm, "relay_ip", cfg.RelayIP, "advertise_ip", cfg.AdvertiseIP,
		"udp_sockets", len(cfg.PacketConns), "tcp_listeners", len(cfg.Listeners),
		"max_allocations", cfg.MaxAllocations, "max_allocations_per_user", cfg.MaxAllocationsPerUser,
		"allow_destinations", cfg.AllowDestinations)
	return s, nil
}

// closeSplit closes the duplicate descriptors made for pcs, leaving the
// caller's sockets open, when New fails half way.
func (s *Server) closeSplit(pcs []turn.PacketConnConfig) {
	for _, c := range pcs {
		g, _ := c.PacketConn.(*guardConn)
		if g == nil {
			continue
		}
		if sp, ok := g.PacketConn.(*splitConn); ok {
			sp.closeWriters()
		}
	}
}

// Close stops the server and closes its sockets and listeners. Live
// allocations are torn down as the reader goroutines exit.
func (s *Server) Close() error {
	err := s.turn.Close()
	s.metrics.allocationsActive.Set(0)
	if err != nil {
		return fmt.Errorf("turnrelay: close: %w", err)
	}
	return nil
}

// AllocationCount returns the number of live allocations.
func (s *Server) AllocationCount() int { return s.turn.AllocationCount() }

// RelayIP returns the address allocations are bound to.
func (s *Server) RelayIP() string { return s.cfg.RelayIP.String() }

// AdvertiseIP returns the address allocations are advertised at.
func (s *Server) AdvertiseIP() string { return s.cfg.AdvertiseIP.String() }

func (s *Server) nowNano() int64 { return s.cfg.Now().UnixNano() }

// permitPeer is pion's PermissionHandler, asked for CreatePermission,
// ChannelBind and Connect (Send and ChannelData need a permission one of
// them made): peers that addrpolicy refuses are refused (403), except the
// relay's public advertised address, whose ports the relayed sockets check
// (see ownPorts).
func (s *Server) permitPeer(client net.Addr, peer net.IP) bool {
	ip, ok := netip.AddrFromSlice(peer)
	if !ok {
		s.metrics.peerRefusals.Inc()
		return false
	}
	if s.advertisePublic && ip.Unmap() == s.cfg.AdvertiseIP {
		return true
	}
	if err := s.peers.Check(ip); err != nil {
		s.metrics.peerRefusals.Inc()
		s.log.Debug("turn peer refused", "client", addrString(client), "peer", ip.String(), "err", err)
		return false
	}
	return true
}

// checkQuota is pion's QuotaHandler, asked for each authenticated
// Allocate: false answers the client 486. It spends a token of the
// source's allocation rate.
func (s *Server) checkQuota(user, _ string, src net.Addr) bool {
	if !s.allocations.Allow(addrOf(src), s.nowNano()) {
		s.metrics.rateRefusals.Inc()
		s.log.Debug("turn allocation refused: source over its allocation rate", "user", user, "src", addrString(src))
		return false
	}
	if s.quota.full(user) {
		s.metrics.quotaRefusals.Inc()
		s.log.Debug("turn allocation refused: quota reached", "user", user, "src", src.String(),
			"limit", s.cfg.MaxAllocationsPerUser)
		return false
	}
	return true
}

func (s *Server) onAllocationCreated(src, _ net.Addr, proto, user, _ string, relay net.Addr, _ int) {
	s.metrics.allocationsActive.Inc()
	s.metrics.allocationsTotal.Inc()
	s.log.Debug("turn allocation created", "user", user, "src", src.String(), "proto", proto, "relay", relay.String())
}

func (s *Server) onAllocationDeleted(src, _ net.Addr, proto, user, _ string) {
	s.metrics.allocationsActive.Dec()
	if user != "" {
		s.quota.release(user)
	}
	s.log.Debug("turn allocation deleted", "user", user, "src", src.String(), "proto", proto)
}

// onRequestError is pion's OnAllocationError: a request or packet from
// src that pion could not handle.
func (s *Server) onRequestError(src, _ net.Addr, _, msg string) {
	s.metrics.requestErrors.Inc()
	s.log.Debug("turn request failed", "src", src.String(), "err", msg)
}
