package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"time"
)

// ServeHTTPProxy serves an HTTP proxy on ln until ctx ends or Close is
// called: CONNECT host:port, and plain requests with an absolute http://
// URL, where host names a peer as for the SOCKS5 proxy: a name or peer ID
// under the names suffix (Config.Names), else as ParseDestination reads it.
// It connects as the SOCKS5 proxy does: through the userspace stack in
// userspace mode, else over a stream. Any other destination gets 403: the
// proxy never reaches the ordinary network. Only the user running the
// daemon is served (OwnerOnly).
func (s *Server) ServeHTTPProxy(ctx context.Context, ln net.Listener) error {
	ln = OwnerOnly(ln, s.log)
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.Out.URL = r.In.URL; r.Out.Host = r.In.Host },
		Transport: &http.Transport{
			DialContext:       s.proxyDial,
			DisableKeepAlives: true,
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, err.Error(), http.StatusBadGateway)
		},
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			host := r.Host
			if r.Method != http.MethodConnect {
				if r.URL.Scheme != "http" || r.URL.Host == "" {
					http.Error(w, "want an absolute http:// URL or CONNECT", http.StatusBadRequest)
					return
				}
				host = r.URL.Host
				if r.URL.Port() == "" {
					host = net.JoinHostPort(r.URL.Hostname(), "80")
				}
			}
			if _, _, err := s.splitPeerPort(host); err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
			if r.Method == http.MethodConnect {
				s.proxyConnect(w, r)
				return
			}
			rp.ServeHTTP(w, r)
		}),
	}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	stop2 := context.AfterFunc(s.ctx, func() { srv.Close() })
	defer stop2()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http proxy: %w", err)
	}
	return nil
}

// splitPeerPort reads host:port where host names a peer (resolvePeer).
func (s *Server) splitPeerPort(hostport string) (string, uint16, error) {
	host, ps, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, err
	}
	peer, err := s.resolvePeer(host)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("port %q: %w", ps, ErrBadPort)
	}
	return peer, uint16(port), nil
}

// proxyDial connects to a peer's port for the HTTP proxy.
func (s *Server) proxyDial(ctx context.Context, _, hostport string) (net.Conn, error) {
	peer, port, err := s.splitPeerPort(hostport)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	if s.cfg.Overlay != nil {
		return s.dialOverlayTCP(ctx, peer, port)
	}
	return s.node.DialPort(ctx, peer, port)
}

// proxyConnect serves CONNECT: 200, then the tunnel.
func (s *Server) proxyConnect(w http.ResponseWriter, r *http.Request) {
	c, err := s.proxyDial(r.Context(), "tcp", r.Host)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	hj, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		c.Close()
		return
	}
	if _, err := io.WriteString(hj, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		hj.Close()
		c.Close()
		return
	}
	client := net.Conn(&hijacked{Conn: hj, r: brw.Reader})
	if !s.track(client) {
		client.Close()
		c.Close()
		return
	}
	s.track(c)
	defer s.untrack(client)
	defer s.untrack(c)
	_ = Splice(client, c)
}
