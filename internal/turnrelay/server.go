package turnrelay

import (
	"fmt"
	"log/slog"
	"net"
	"syscall"

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
		quota:   newQuota(cfg.MaxAllocationsPerUser),
		metrics: m,
	}
	gen := &relayGenerator{
		static: &turn.RelayAddressGeneratorStatic{
			RelayAddress: net.IP(cfg.RelayIP.AsSlice()),
			Address:      cfg.RelayIP.String(),
		},
		quota:   s.quota,
		metrics: m,
	}
	sc := turn.ServerConfig{
		Realm:         cfg.Realm,
		AuthHandler:   s.authenticate,
		QuotaHandler:  s.checkQuota,
		LoggerFactory: pionLogs{l: cfg.Logger},
		EventHandler: turn.EventHandler{
			OnAuth:              s.onAuth,
			OnAllocationCreated: s.onAllocationCreated,
			OnAllocationDeleted: s.onAllocationDeleted,
			OnAllocationError:   s.onRequestError,
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
		sc.PacketConnConfigs = append(sc.PacketConnConfigs, turn.PacketConnConfig{
			PacketConn:            pc,
			RelayAddressGenerator: gen,
		})
	}
	for _, ln := range cfg.Listeners {
		sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{
			Listener:              ln,
			RelayAddressGenerator: gen,
		})
	}
	ts, err := turn.NewServer(sc)
	if err != nil {
		s.closeSplit(sc.PacketConnConfigs)
		return nil, fmt.Errorf("turnrelay: start pion server: %w", err)
	}
	s.turn = ts
	s.log.Info("turn server started", "realm", cfg.Realm, "relay_ip", cfg.RelayIP,
		"udp_sockets", len(cfg.PacketConns), "tcp_listeners", len(cfg.Listeners),
		"max_allocations_per_user", cfg.MaxAllocationsPerUser)
	return s, nil
}

// closeSplit closes the duplicate descriptors made for pcs, leaving the
// caller's sockets open, when New fails half way.
func (s *Server) closeSplit(pcs []turn.PacketConnConfig) {
	for _, c := range pcs {
		if sp, ok := c.PacketConn.(*splitConn); ok {
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

// RelayIP returns the address allocations are bound to and advertised.
func (s *Server) RelayIP() string { return s.cfg.RelayIP.String() }

// checkQuota is pion's QuotaHandler: false answers the client 486.
func (s *Server) checkQuota(user, _ string, src net.Addr) bool {
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
