package streamrelay

import (
	"net"
	"net/netip"

	"github.com/keymesh/keymesh/internal/ratelimit"
)

// Listener wraps the stream relay's TCP listener so that a source over
// OpenRate (connections per second per client IPv4 address or IPv6 /64),
// or one whose address, network or the relay holds the most tunnels
// allowed, is closed on accept, before the TLS handshake costs anything. Tunnel
// opens are limited again, with a bucket of their own, in ServeHTTP.
func (s *Server) Listener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, s: s}
}

type limitListener struct {
	net.Listener
	s *Server
}

// Accept returns the next connection whose source is within its rate.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
		if err != nil {
			return c, nil
		}
		client := ratelimit.Source(ap.Addr())
		if !l.s.conns.Allow(client, l.s.cfg.Now().UnixNano()) {
			l.s.m.refused.WithLabelValues("conn_rate").Inc()
			c.Close()
			continue
		}
		// A client at its tunnel cap would be refused after the TLS
		// handshake and the request: refuse it before they cost anything.
		if reason := l.s.full(client); reason != "" {
			l.s.m.refused.WithLabelValues(reason).Inc()
			c.Close()
			continue
		}
		return c, nil
	}
}
