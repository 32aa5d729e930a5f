package obs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is a named health or readiness probe; nil means fine.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Admin is the admin HTTP endpoint of a server: /healthz (is the process
// able to serve: every health check passes), /readyz (should it get traffic:
// health and readiness checks pass), /metrics (Prometheus text format) and
// /version.
type Admin struct {
	// Registry holds the server's metrics; NewAdmin adds Go and process
	// collectors and a build-info gauge.
	Registry *prometheus.Registry

	log    *slog.Logger
	mu     sync.Mutex
	health []Check
	ready  []Check
	limits httpLimits
}

// Limits of the admin HTTP server, so that clients that connect and send
// nothing, dribble headers, or keep idle connections hold nothing for long.
const (
	AdminReadHeaderTimeout = 5 * time.Second
	AdminReadTimeout       = 10 * time.Second
	AdminWriteTimeout      = 30 * time.Second
	AdminIdleTimeout       = 60 * time.Second
	AdminMaxHeaderBytes    = 16 << 10
)

type httpLimits struct {
	readHeader, read, write, idle time.Duration
	maxHeader                     int
}

// NewAdmin makes an Admin for the named server.
func NewAdmin(server string, log *slog.Logger) *Admin {
	if log == nil {
		log = Discard()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	bi := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "keymesh_build_info",
		Help:        "Build information; always 1.",
		ConstLabels: prometheus.Labels{"server": server, "version": Version()},
	})
	bi.Set(1)
	reg.MustRegister(bi)
	return &Admin{Registry: reg, log: log, limits: httpLimits{
		readHeader: AdminReadHeaderTimeout, read: AdminReadTimeout, write: AdminWriteTimeout,
		idle: AdminIdleTimeout, maxHeader: AdminMaxHeaderBytes,
	}}
}

// AddHealth adds a check to /healthz (and so to /readyz).
func (a *Admin) AddHealth(name string, fn func(ctx context.Context) error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.health = append(a.health, Check{name, fn})
}

// AddReady adds a check to /readyz only.
func (a *Admin) AddReady(name string, fn func(ctx context.Context) error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ready = append(a.ready, Check{name, fn})
}

// Handler returns the admin HTTP handler.
func (a *Admin) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		checks := append([]Check(nil), a.health...)
		a.mu.Unlock()
		a.serveChecks(w, r, checks)
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		checks := append(append([]Check(nil), a.health...), a.ready...)
		a.mu.Unlock()
		a.serveChecks(w, r, checks)
	})
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, Version())
	})
	return mux
}

func (a *Admin) serveChecks(w http.ResponseWriter, r *http.Request, checks []Check) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var failed []string
	for _, c := range checks {
		if err := c.Fn(ctx); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", c.Name, err))
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(failed) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		for _, f := range failed {
			fmt.Fprintln(w, "fail", f)
		}
		return
	}
	fmt.Fprintln(w, "ok")
}

// Serve serves the admin endpoint on ln until ctx ends.
func (a *Admin) Serve(ctx context.Context, ln net.Listener) error {
	l := a.limits
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: l.readHeader,
		ReadTimeout:       l.read,
		WriteTimeout:      l.write,
		IdleTimeout:       l.idle,
		MaxHeaderBytes:    l.maxHeader,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin server: %w", err)
	}
	return nil
}

// ListenAndServe listens on addr (TCP) and serves in the background until
// ctx ends. It returns the bound address, so addr may use port 0.
func (a *Admin) ListenAndServe(ctx context.Context, addr string) (net.Addr, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listen %s: %w", addr, err)
	}
	go func() {
		if err := a.Serve(ctx, ln); err != nil {
			a.log.Error("admin server stopped", "err", err)
		}
	}()
	return ln.Addr(), nil
}
