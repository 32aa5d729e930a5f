package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"

	socks5 "github.com/things-go/go-socks5"
	"github.com/things-go/go-socks5/statute"

	"github.com/keymesh/keymesh/internal/crypto"
)

// KeymeshDomain is the pseudo top-level domain for peer IDs in SOCKS5
// destinations: <peer-id>.keymesh.
const KeymeshDomain = ".keymesh"

// ParseDestination says which peer a SOCKS5 destination host names: a peer
// ID (optionally followed by ".keymesh"), or an overlay IPv6 address. The
// result is the form the node dials: the peer ID's text, or the address.
func ParseDestination(host string) (string, error) {
	h := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(host)), ".")
	h = strings.TrimSuffix(h, KeymeshDomain)
	if a, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		a = a.Unmap()
		if !crypto.IsOverlay(a) {
			return "", fmt.Errorf("%s: %w (not in the overlay prefix %s)", host, ErrNotOverlay, crypto.OverlayPrefix)
		}
		return a.String(), nil
	}
	id, err := crypto.ParsePeerID(h)
	if err != nil {
		return "", fmt.Errorf("%s: %w (want a peer ID, <peer-id>.keymesh or an overlay address)", host, ErrNotOverlay)
	}
	return id.String(), nil
}

// resolvePeer says which peer host names: a name or peer ID under the
// names suffix (Config.Names), else what ParseDestination reads.
func (s *Server) resolvePeer(host string) (string, error) {
	peer, named, err := s.lookupName(host)
	if err != nil || named {
		return peer, err
	}
	return ParseDestination(host)
}

// lookupName resolves host when it lies under the names suffix (named),
// failing for a name this peer's configuration does not hold; any other
// host comes back unchanged, for the node to read.
func (s *Server) lookupName(host string) (peer string, named bool, err error) {
	t := s.cfg.Names
	if t == nil || !t.InZone(host) {
		return host, false, nil
	}
	if id, ok := t.Lookup(host); ok {
		return id.String(), true, nil
	}
	return "", true, fmt.Errorf("%s: %w (no such name under .%s in this peer's --name, --allow name= rules or --names-file)", host, ErrUnknownName, t.Suffix())
}

// ServeSOCKS serves a SOCKS5 proxy (CONNECT, and in userspace mode UDP
// ASSOCIATE; no authentication) on ln until ctx ends or Close is called.
// Destinations must name a peer (see ParseDestination); the connection
// becomes a stream to that peer's port, or in userspace mode (Config.Overlay)
// a TCP connection to the peer's overlay address through the userspace
// stack.
// Any other destination is refused ("not allowed by ruleset"): the proxy
// never reaches the ordinary network. Local connections are served only
// from the user running the daemon (OwnerOnly): the proxy acts with the
// node's identity.
func (s *Server) ServeSOCKS(ctx context.Context, ln net.Listener) error {
	ln = OwnerOnly(ln, s.log)
	s.mu.Lock()
	s.socksAddr = ln.Addr().String()
	s.mu.Unlock()
	opts := []socks5.Option{
		socks5.WithResolver(socksResolver{s}),
		socks5.WithRule(socksRule{udp: s.cfg.Overlay != nil}),
		socks5.WithDialAndRequest(s.socksDial),
		socks5.WithLogger(socksLogger{s.log}),
	}
	if s.cfg.Overlay != nil {
		opts = append(opts, socks5.WithAssociateHandle(s.socksAssociate))
	}
	srv := socks5.NewServer(opts...)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
		case <-s.ctx.Done():
		case <-done:
		}
		ln.Close()
	}()
	err := srv.Serve(ln)
	if ctx.Err() != nil || s.ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("socks5: %w", err)
}

// socksDial opens the stream for an allowed CONNECT.
func (s *Server) socksDial(ctx context.Context, _, addr string, req *socks5.Request) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if req != nil && req.RawDestAddr != nil && req.RawDestAddr.FQDN != "" {
		host = req.RawDestAddr.FQDN // dial by peer ID when the client named one
	}
	peer, err := s.resolvePeer(host)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port %q: %w", portStr, ErrBadPort)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	dial := s.node.DialPort
	if s.cfg.Overlay != nil {
		dial = s.dialOverlayTCP
	}
	c, err := dial(ctx, peer, uint16(port))
	if err != nil {
		s.log.Info("socks5: dial failed", "peer", peer, "port", port, "err", err)
		return nil, err
	}
	if !s.track(c) {
		c.Close()
		return nil, net.ErrClosed
	}
	s.log.Debug("socks5: stream opened", "peer", peer, "port", port)
	return &socksConn{Conn: c, s: s, local: &net.TCPAddr{IP: s.node.OverlayAddr().AsSlice()}}, nil
}

// socksConn gives the library the TCP-style local address it needs for its
// reply, and untracks the stream once closed.
type socksConn struct {
	net.Conn
	s     *Server
	local *net.TCPAddr
}

func (c *socksConn) LocalAddr() net.Addr { return c.local }

func (c *socksConn) CloseWrite() error {
	CloseWrite(c.Conn)
	return nil
}

func (c *socksConn) Close() error {
	c.s.untrack(c.Conn)
	return c.Conn.Close()
}

// socksResolver turns keymesh names into overlay addresses and leaves every
// other name unresolved (nil), for socksRule to refuse: no DNS lookups.
type socksResolver struct{ s *Server }

func (r socksResolver) Resolve(ctx context.Context, name string) (context.Context, net.IP, error) {
	dst, err := r.s.resolvePeer(name)
	if err != nil {
		return ctx, nil, nil
	}
	if a, err := netip.ParseAddr(dst); err == nil {
		return ctx, a.AsSlice(), nil
	}
	id, _ := crypto.ParsePeerID(dst)
	return ctx, id.OverlayAddr().AsSlice(), nil
}

// socksRule admits CONNECT to overlay addresses only, and with udp UDP
// ASSOCIATE (whose destinations socksAssociate checks one by one).
type socksRule struct{ udp bool }

func (r socksRule) Allow(ctx context.Context, req *socks5.Request) (context.Context, bool) {
	if r.udp && req.Command == statute.CommandAssociate {
		return ctx, true
	}
	if req.Command != statute.CommandConnect || req.DestAddr == nil {
		return ctx, false
	}
	a, ok := netip.AddrFromSlice(req.DestAddr.IP)
	return ctx, ok && crypto.IsOverlay(a.Unmap())
}

type socksLogger struct{ log *slog.Logger }

func (l socksLogger) Errorf(format string, args ...any) {
	l.log.Debug("socks5: " + fmt.Sprintf(format, args...))
}
