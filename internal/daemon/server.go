package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keymesh/keymesh/internal/names"
	"github.com/keymesh/keymesh/internal/obs"
	"github.com/keymesh/keymesh/internal/overlay"
)

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	// Node is the running node the daemon serves. Required.
	Node Node
	// Logger gets the daemon's logs; default: discard.
	Logger *slog.Logger
	// Socket is the API socket's path, reported in the status only.
	Socket string
	// AcceptHold is how long an incoming stream waits for a `peer listen`
	// before it is closed; default 30 s.
	AcceptHold time.Duration
	// DialTimeout bounds opening a stream to a peer (API and SOCKS5) and
	// a ping; default 30 s.
	DialTimeout time.Duration
	// DialLocal connects exposed ports to local services; default a
	// net.Dialer with a 5 s timeout.
	DialLocal func(ctx context.Context, network, addr string) (net.Conn, error)
	// Overlay is the userspace TCP/IP stack on the node's overlay address
	// (userspace mode); nil without. With it the SOCKS5 proxy connects
	// through it and relays UDP (ASSOCIATE), exposed ports are served on
	// the overlay address for TCP and UDP as well as to streams, and the
	// API dials UDP (`peer forward --udp`).
	Overlay *overlay.Stack
	// Packets reports the overlay router's counters (userspace or TUN
	// mode) for the status; nil without.
	Packets func() overlay.Stats
	// Metrics, when set, is served at GET /v1/metrics in the Prometheus
	// text format (the policy's refusal counter, for one).
	Metrics prometheus.Gatherer
	// Profiles serves Go's runtime profiles (net/http/pprof) under GET
	// /v1/debug/pprof/ (the CPU profile at /v1/debug/pprof/profile?seconds=N),
	// on the API socket only, so to its owner alone.
	Profiles bool
	// Names, when set, resolves <name>.<suffix> and <peer-id>.<suffix> in
	// the SOCKS5 proxy, dial and ping (see package names).
	Names *names.Table
}

func (c *Config) defaults() error {
	if c.Node == nil {
		return errors.New("daemon: Config.Node is required")
	}
	if c.Logger == nil {
		c.Logger = obs.Discard()
	}
	if c.AcceptHold <= 0 {
		c.AcceptHold = 30 * time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 30 * time.Second
	}
	if c.DialLocal == nil {
		d := &net.Dialer{Timeout: 5 * time.Second}
		c.DialLocal = d.DialContext
	}
	return nil
}

// Server is the peer daemon: the local API, the SOCKS5 proxy and the
// exposed ports, all on top of one Node.
type Server struct {
	cfg  Config
	node Node
	log  *slog.Logger

	ctx    context.Context // lives until Close
	cancel context.CancelFunc

	mu        sync.Mutex
	ports     map[uint16]*portEntry
	socksAddr string
	conns     map[net.Conn]struct{} // spliced connections, closed by Close
	results   results
	wg        sync.WaitGroup
}

// New makes a Server. It starts serving streams to port 0 of the node at
// once (handed to `peer listen` callers); Close stops everything.
func New(cfg Config) (*Server, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:    cfg,
		node:   cfg.Node,
		log:    cfg.Logger,
		ctx:    ctx,
		cancel: cancel,
		ports:  map[uint16]*portEntry{},
		conns:  map[net.Conn]struct{}{},
	}
	s.mu.Lock()
	s.addQueueLocked(0, cfg.Node.Listen(), true)
	s.mu.Unlock()
	return s, nil
}

// Close closes the daemon's listeners on the node (port 0's included) and
// every spliced connection. It does not close the Node.
func (s *Server) Close() error {
	s.cancel()
	s.mu.Lock()
	for p, e := range s.ports {
		e.ln.Close()
		if e.stopOverlay != nil {
			e.stopOverlay()
		}
		delete(s.ports, p)
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Handler returns the local API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.handleStatus)
	mux.HandleFunc("POST /v1/ping", s.handlePing)
	mux.HandleFunc("POST /v1/netcheck", s.handleNetcheck)
	mux.HandleFunc("POST /v1/dial", s.handleDial)
	mux.HandleFunc("POST /v1/accept", s.handleAccept)
	mux.HandleFunc("GET /v1/stream", s.handleStreamResult)
	mux.HandleFunc("POST /v1/expose", s.handleExpose)
	mux.HandleFunc("DELETE /v1/expose", s.handleUnexpose)
	if s.cfg.Metrics != nil {
		mux.Handle("GET /v1/metrics", promhttp.HandlerFor(s.cfg.Metrics, promhttp.HandlerOpts{}))
	}
	if s.cfg.Profiles {
		// pprof.Index serves the named profiles from the path's last
		// element; its own paths begin with /debug/pprof/.
		prof := http.NewServeMux()
		prof.HandleFunc("/debug/pprof/", pprof.Index)
		prof.HandleFunc("/debug/pprof/profile", pprof.Profile)
		prof.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.Handle("GET /v1/debug/pprof/", http.StripPrefix("/v1", prof))
	}
	return mux
}

// Serve serves the local API on ln until ctx ends or Close is called. Only
// connections from the user running the daemon are served (OwnerOnly).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ln = OwnerOnly(ln, s.log)
	// Requests end when either the caller's ctx or the server ends.
	base, cancelBase := context.WithCancel(ctx)
	defer cancelBase()
	stopBase := context.AfterFunc(s.ctx, cancelBase)
	defer stopBase()
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-base.Done():
		case <-done:
			return
		}
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("local API: %w", err)
	}
	return nil
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	st := DaemonStatus{
		Status:  s.node.Status(),
		Socket:  s.cfg.Socket,
		Version: obs.Version(),
	}
	if s.cfg.Packets != nil {
		p := s.cfg.Packets()
		st.Packets = &p
	}
	s.mu.Lock()
	st.SOCKS5 = s.socksAddr
	for p, e := range s.ports {
		if e.expose {
			st.Exposed = append(st.Exposed, p)
		}
	}
	s.mu.Unlock()
	sort.Slice(st.Exposed, func(i, j int) bool { return st.Exposed[i] < st.Exposed[j] })
	if st.Peers == nil {
		st.Peers = []PeerStatus{}
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) handlePing(w http.ResponseWriter, r *http.Request) {
	peer := r.URL.Query().Get("peer")
	if peer == "" {
		writeError(w, http.StatusBadRequest, errors.New("missing peer"))
		return
	}
	peer, _, err := s.lookupName(peer)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	timeout := s.cfg.DialTimeout
	if v := r.URL.Query().Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("timeout %q: want a duration such as 5s", v))
			return
		}
		timeout = d
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	res, err := s.node.Ping(ctx, peer)
	if err != nil {
		writeError(w, statusFor(ctx, err), err)
		return
	}
	if res.RTTms == 0 && res.RTT != 0 {
		res.RTTms = float64(res.RTT.Microseconds()) / 1000
	}
	writeJSON(w, http.StatusOK, res)
}

// statusFor maps a node error to an HTTP status for the CLI.
func statusFor(ctx context.Context, err error) int {
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

func parsePort(v string, allowZero bool) (uint16, error) {
	if v == "" {
		v = "0"
	}
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || (n == 0 && !allowZero) {
		lo := 1
		if allowZero {
			lo = 0
		}
		return 0, fmt.Errorf("port %q: %w (want %d-65535)", v, ErrBadPort, lo)
	}
	return uint16(n), nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, apiError{Error: err.Error()})
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) handleNetcheck(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	rep, err := s.node.Netcheck(ctx)
	if err != nil {
		writeError(w, statusFor(ctx, err), err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}
