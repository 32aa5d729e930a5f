package streamrelay

import (
	"net"
	"net/netip"
)

// Listener wraps the stream relay's TCP listener so that a source over
// OpenRate (connections per second per client IPv4 address or IPv6 /64)
// is closed on accept, before the TLS handshake costs anything. Tunnel
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
		if err != nil || l.s.conns.Allow(ap.Addr(), l.s.cfg.Now().UnixNano()) {
			return c, nil
		}
		l.s.m.refused.WithLabelValues("conn_rate").Inc()
		c.Close()
	}
}
