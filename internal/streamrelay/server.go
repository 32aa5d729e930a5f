package streamrelay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/keymesh/keymesh/internal/obs"
)

// Config configures a stream relay Server.
type Config struct {
	// PresenceIP is the address the tunnels' UDP sockets bind to and
	// advertise. It must be reachable by the rendezvous, the UDP relays and
	// other peers. Required.
	PresenceIP netip.Addr
	// MaxTunnels bounds open tunnels (default 10,000).
	MaxTunnels int
	// Rate and Burst bound each tunnel's datagrams per second in each
	// direction (default 20,000 and 2,000).
	Rate  float64
	Burst int
	// ClockSkew is how far a hello's clock may be from ours (default 2 min).
	ClockSkew time.Duration
	// Logger defaults to discarding; Registerer, when set, gets the metrics.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now defaults to time.Now.
	Now func() time.Time
}

func (c *Config) validate() error {
	if !c.PresenceIP.IsValid() {
		return errors.New("stream relay: PresenceIP is required (the address tunnels' UDP sockets use)")
	}
	if c.MaxTunnels <= 0 {
		c.MaxTunnels = 10000
	}
	if c.Rate <= 0 {
		c.Rate = 20000
	}
	if c.Burst <= 0 {
		c.Burst = 2000
	}
	if c.ClockSkew <= 0 {
		c.ClockSkew = 2 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = obs.Discard()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

type metrics struct {
	tunnels prometheus.Gauge
	opened  prometheus.Counter
	refused *prometheus.CounterVec
	packets *prometheus.CounterVec
	bytes   *prometheus.CounterVec
	dropped *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		tunnels: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keymesh_stream_tunnels", Help: "Open stream tunnels."}),
		opened:  prometheus.NewCounter(prometheus.CounterOpts{Name: "keymesh_stream_tunnels_opened_total", Help: "Stream tunnels opened."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keymesh_stream_tunnels_refused_total", Help: "Tunnel attempts refused, by reason."}, []string{"reason"}),
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keymesh_stream_datagrams_total", Help: "Datagrams carried, by direction (up: from the tunnel to UDP)."}, []string{"dir"}),
		bytes:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keymesh_stream_bytes_total", Help: "Payload bytes carried, by direction."}, []string{"dir"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keymesh_stream_dropped_total", Help: "Datagrams dropped, by reason."}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.tunnels, m.opened, m.refused, m.packets, m.bytes, m.dropped)
	}
	return m
}

// Server accepts tunnels. It keeps no state beyond the open tunnels: a peer
// whose tunnel breaks opens a new one and re-registers.
type Server struct {
	cfg  Config
	m    *metrics
	open atomic.Int64
}

// New makes a Server.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, m: newMetrics(cfg.Registerer)}, nil
}

// Open returns the number of open tunnels.
func (s *Server) Open() int { return int(s.open.Load()) }

// ServeHTTP upgrades a request at Path to a tunnel.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != Path {
		http.NotFound(w, r)
		return
	}
	if s.open.Add(1) > int64(s.cfg.MaxTunnels) {
		s.open.Add(-1)
		s.m.refused.WithLabelValues("full").Inc()
		http.Error(w, "relay full", http.StatusServiceUnavailable)
		return
	}
	defer s.open.Add(-1)
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{})
	if err != nil {
		s.m.refused.WithLabelValues("upgrade").Inc()
		return
	}
	defer ws.CloseNow()
	ws.SetReadLimit(addrLen + MaxPayload + 16)
	if err := s.serve(r.Context(), ws); err != nil {
		s.cfg.Logger.Debug("tunnel ended", "remote", r.RemoteAddr, "err", err)
	}
}

func (s *Server) serve(ctx context.Context, ws *websocket.Conn) error {
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	typ, hello, err := ws.Read(hctx)
	cancel()
	if err != nil {
		s.m.refused.WithLabelValues("no_hello").Inc()
		return fmt.Errorf("read hello: %w", err)
	}
	if typ != websocket.MessageBinary {
		s.m.refused.WithLabelValues("bad_hello").Inc()
		return ErrHello
	}
	id, ts, err := parseClientHello(hello)
	if err != nil {
		s.m.refused.WithLabelValues("bad_hello").Inc()
		ws.Close(websocket.StatusPolicyViolation, "bad hello")
		return err
	}
	if d := s.cfg.Now().Sub(ts); d > s.cfg.ClockSkew || d < -s.cfg.ClockSkew {
		s.m.refused.WithLabelValues("stale_time").Inc()
		ws.Close(websocket.StatusPolicyViolation, "clock too far off")
		return fmt.Errorf("%w: clock off by %v", ErrHello, d)
	}
	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(s.cfg.PresenceIP, 0)))
	if err != nil {
		s.m.refused.WithLabelValues("no_socket").Inc()
		ws.Close(websocket.StatusInternalError, "no socket")
		return fmt.Errorf("presence socket: %w", err)
	}
	defer udp.Close()
	presence := netip.AddrPortFrom(s.cfg.PresenceIP, udp.LocalAddr().(*net.UDPAddr).AddrPort().Port())
	if err := ws.Write(ctx, websocket.MessageBinary, appendServerHello(nil, presence)); err != nil {
		return fmt.Errorf("write hello: %w", err)
	}
	s.m.opened.Inc()
	s.m.tunnels.Inc()
	defer s.m.tunnels.Dec()
	s.cfg.Logger.Info("tunnel open", "peer", id.Short(), "presence", presence)

	ctx, cancel = context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		udp.Close()
	}()
	errc := make(chan error, 1)
	go func() { errc <- s.down(ctx, ws, udp) }()
	err = s.up(ctx, ws, udp) // ends when the tunnel does
	cancel()
	<-errc
	return err
}

// up carries datagrams from the tunnel out of the presence socket.
func (s *Server) up(ctx context.Context, ws *websocket.Conn, udp *net.UDPConn) error {
	lim := rate.NewLimiter(rate.Limit(s.cfg.Rate), s.cfg.Burst)
	for {
		typ, b, err := ws.Read(ctx)
		if err != nil {
			return err
		}
		if typ != websocket.MessageBinary {
			s.m.dropped.WithLabelValues("malformed").Inc()
			continue
		}
		dst, payload, err := parseDatagram(b)
		if err != nil {
			s.m.dropped.WithLabelValues("malformed").Inc()
			continue
		}
		if !lim.Allow() {
			s.m.dropped.WithLabelValues("rate_limited").Inc()
			continue
		}
		if _, err := udp.WriteToUDPAddrPort(payload, dst); err != nil {
			s.m.dropped.WithLabelValues("send").Inc()
			continue
		}
		s.m.packets.WithLabelValues("up").Inc()
		s.m.bytes.WithLabelValues("up").Add(float64(len(payload)))
	}
}

// down carries datagrams arriving at the presence socket into the tunnel.
func (s *Server) down(ctx context.Context, ws *websocket.Conn, udp *net.UDPConn) error {
	lim := rate.NewLimiter(rate.Limit(s.cfg.Rate), s.cfg.Burst)
	buf := make([]byte, MaxPayload+1)
	out := make([]byte, 0, addrLen+MaxPayload)
	for {
		n, from, err := udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		if n > MaxPayload {
			s.m.dropped.WithLabelValues("too_large").Inc()
			continue
		}
		if !lim.Allow() {
			s.m.dropped.WithLabelValues("rate_limited").Inc()
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		out = appendDatagram(out[:0], from, buf[:n])
		if err := ws.Write(ctx, websocket.MessageBinary, out); err != nil {
			return err
		}
		s.m.packets.WithLabelValues("down").Inc()
		s.m.bytes.WithLabelValues("down").Add(float64(n))
	}
}
