package streamrelay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/keymesh/keymesh/internal/addrpolicy"
	"github.com/keymesh/keymesh/internal/ratelimit"
	"github.com/keymesh/keymesh/internal/wire"

	"github.com/keymesh/keymesh/internal/streamclient"
)

type metrics struct {
	tunnels prometheus.Gauge
	opened  prometheus.Counter
	refused *prometheus.CounterVec
	packets *prometheus.CounterVec
	bytes   *prometheus.CounterVec
	dropped *prometheus.CounterVec
	closed  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		tunnels: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keymesh_stream_tunnels", Help: "Open stream tunnels."}),
		opened:  prometheus.NewCounter(prometheus.CounterOpts{Name: "keymesh_stream_tunnels_opened_total", Help: "Stream tunnels opened."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keymesh_stream_tunnels_refused_total", Help: "Tunnel attempts refused, by reason."}, []string{"reason"}),
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keymesh_stream_datagrams_total", Help: "Datagrams carried, by direction (up: from the tunnel to UDP)."}, []string{"dir"}),
		bytes:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keymesh_stream_bytes_total", Help: "Payload bytes carried, by direction."}, []string{"dir"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keymesh_stream_dropped_total", Help: "Datagrams dropped, by reason (destination_denied, destination_own, destinations_full, probe_rate, rate limits...)."}, []string{"reason"}),
		closed:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keymesh_stream_tunnels_closed_total", Help: "Tunnels the relay closed, by reason (idle, write_timeout)."}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.tunnels, m.opened, m.refused, m.packets, m.bytes, m.dropped, m.closed)
	}
	return m
}

// Server accepts tunnels. It keeps no state beyond the open tunnels and the
// per-source rate limits: a peer whose tunnel breaks opens a new one and
// re-registers.
type Server struct {
	cfg      Config
	m        *metrics
	policy   *addrpolicy.Policy
	own      map[netip.Addr]bool
	ownPorts map[uint16]bool
	// servers and serverPorts are Config.ServerAddrs and ServerPorts.
	servers     map[netip.AddrPort]bool
	serverPorts map[uint16]bool
	opens       *ratelimit.Limiter // tunnel opens per client address
	conns       *ratelimit.Limiter // TCP connections per client address (Listener)
	ipBytes     *ratelimit.Limiter // bytes out per client address

	mu       sync.Mutex
	open     int                  // tunnels, in their handshake or open
	perIP    map[netip.Addr]int   // open per ratelimit.Source of the client
	perNet   map[netip.Prefix]int // open per client IPv4 /24 or IPv6 /48
	ports    map[uint16]int       // live presence ports
	tunnels  map[*tunnel]struct{} // past their hello
	sweeping bool
}

// tunnel is the server's record of one open tunnel.
type tunnel struct {
	cancel context.CancelFunc
	last   atomic.Int64 // Unix ns of the client's last datagram
	dests  *destinations
}

// New makes a Server.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:         cfg,
		m:           newMetrics(cfg.Registerer),
		policy:      addrpolicy.New(cfg.AllowDestinations, cfg.OwnAddrs),
		own:         make(map[netip.Addr]bool),
		ownPorts:    make(map[uint16]bool),
		servers:     make(map[netip.AddrPort]bool),
		serverPorts: make(map[uint16]bool),
		opens:       ratelimit.New(ratelimit.Config{PerSecond: cfg.OpenRate, Burst: cfg.OpenBurst}),
		conns:       ratelimit.New(ratelimit.Config{PerSecond: cfg.OpenRate, Burst: cfg.OpenBurst}),
		ipBytes:     ratelimit.New(ratelimit.Config{PerSecond: cfg.IPByteRate, Burst: byteBurst(cfg.IPByteRate)}),
		perIP:       make(map[netip.Addr]int),
		perNet:      make(map[netip.Prefix]int),
		ports:       make(map[uint16]int),
		tunnels:     make(map[*tunnel]struct{}),
	}
	for _, a := range cfg.OwnAddrs {
		s.own[a.Unmap().WithZone("")] = true
	}
	for _, p := range cfg.OwnPorts {
		s.ownPorts[p] = true
	}
	for _, a := range cfg.ServerAddrs {
		s.servers[netip.AddrPortFrom(a.Addr().Unmap().WithZone(""), a.Port())] = true
	}
	for _, p := range cfg.ServerPorts {
		s.serverPorts[p] = true
	}
	return s, nil
}

// Open returns the number of tunnels, those in their handshake included.
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

// ServeHTTP upgrades a request at Path to a tunnel.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != streamclient.Path {
		http.NotFound(w, r)
		return
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		s.m.refused.WithLabelValues("no_address").Inc()
		http.Error(w, "no client address", http.StatusBadRequest)
		return
	}
	client := ratelimit.Source(ap.Addr())
	if !s.opens.Allow(client, s.cfg.Now().UnixNano()) {
		s.m.refused.WithLabelValues("open_rate").Inc()
		http.Error(w, "too many tunnels opened from your address; retry later", http.StatusTooManyRequests)
		return
	}
	if reason := s.admit(client); reason != "" {
		s.m.refused.WithLabelValues(reason).Inc()
		w.Header().Set("Connection", "close") // not held open as an idle keep-alive
		code := http.StatusServiceUnavailable
		if reason == "per_ip" || reason == "per_net" {
			code = http.StatusTooManyRequests
		}
		http.Error(w, "relay full", code)
		return
	}
	ws, err := websocket.Accept(&smallHijack{ResponseWriter: w}, r, &websocket.AcceptOptions{})
	if err != nil {
		s.release(client)
		s.m.refused.WithLabelValues("upgrade").Inc()
		return
	}
	ws.SetReadLimit(streamclient.AddrLen + streamclient.MaxPayload + 16)
	// The tunnel runs on in a goroutine of its own: returning lets
	// net/http drop the connection's 4 KiB buffers, the request and the
	// deep stack of its serving goroutine, which an idle tunnel would
	// otherwise hold for its life.
	remote := r.RemoteAddr
	go func() {
		defer s.release(client)
		defer ws.CloseNow()
		if err := s.serve(context.Background(), ws, client); err != nil {
			s.cfg.Logger.Debug("tunnel ended", "remote", remote, "err", err)
		}
	}()
}

// admit counts a tunnel against the global and the per-address caps; ""
// when it may open, else the refusal reason.
func (s *Server) admit(client netip.Addr) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := clientNet(client)
	switch {
	case s.open >= s.cfg.MaxTunnels:
		return "full"
	case s.perIP[client] >= s.cfg.MaxTunnelsPerIP:
		return "per_ip"
	case s.perNet[n] >= s.cfg.MaxTunnelsPerNet:
		return "per_net"
	}
	s.open++
	s.perIP[client]++
	s.perNet[n]++
	return ""
}

// full is admit's check alone: the refusal reason when client could not
// open a tunnel now, else "".
func (s *Server) full(client netip.Addr) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.open >= s.cfg.MaxTunnels:
		return "full"
	case s.perIP[client] >= s.cfg.MaxTunnelsPerIP:
		return "per_ip"
	case s.perNet[clientNet(client)] >= s.cfg.MaxTunnelsPerNet:
		return "per_net"
	}
	return ""
}

// clientNet is the network a client address counts against for
// MaxTunnelsPerNet: its IPv4 /24 or IPv6 /48 (what one site is likely to
// hold; an IPv6 attacker has a /48 as easily as a /64).
func clientNet(a netip.Addr) netip.Prefix {
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

func (s *Server) release(client netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open--
	if s.perIP[client]--; s.perIP[client] <= 0 {
		delete(s.perIP, client)
	}
	n := clientNet(client)
	if s.perNet[n]--; s.perNet[n] <= 0 {
		delete(s.perNet, n)
	}
}

func (s *Server) serve(ctx context.Context, ws *websocket.Conn, client netip.Addr) error {
	hctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	typ, hello, err := ws.Read(hctx)
	cancel()
	if err != nil {
		s.m.refused.WithLabelValues("no_hello").Inc()
		return fmt.Errorf("read hello: %w", err)
	}
	if typ != websocket.MessageBinary {
		s.m.refused.WithLabelValues("bad_hello").Inc()
		return streamclient.ErrHello
	}
	// The clock first: it costs nothing, the signature costs a verify.
	ts, err := streamclient.ClientHelloTime(hello)
	if err != nil {
		s.m.refused.WithLabelValues("bad_hello").Inc()
		ws.Close(websocket.StatusPolicyViolation, "bad hello")
		return err
	}
	if d := s.cfg.Now().Sub(ts); d > s.cfg.ClockSkew || d < -s.cfg.ClockSkew {
		s.m.refused.WithLabelValues("stale_time").Inc()
		ws.Close(websocket.StatusPolicyViolation, "clock too far off")
		return fmt.Errorf("%w: clock off by %v", streamclient.ErrHello, d)
	}
	id, _, err := streamclient.ParseClientHello(hello)
	if err != nil {
		s.m.refused.WithLabelValues("bad_hello").Inc()
		ws.Close(websocket.StatusPolicyViolation, "bad hello")
		return err
	}
	udp, err := s.cfg.ListenUDP(netip.AddrPortFrom(s.cfg.PresenceIP, 0))
	if err != nil {
		s.m.refused.WithLabelValues("no_socket").Inc()
		ws.Close(websocket.StatusInternalError, "no socket")
		return fmt.Errorf("presence socket: %w", err)
	}
	defer udp.Close()
	port := udp.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	presence := netip.AddrPortFrom(s.cfg.AdvertiseIP, port)
	wctx, wcancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	err = ws.Write(wctx, websocket.MessageBinary, streamclient.AppendServerHello(nil, presence))
	wcancel()
	if err != nil {
		return fmt.Errorf("write hello: %w", err)
	}

	ctx, cancel = context.WithCancel(ctx)
	defer cancel()
	t := &tunnel{cancel: cancel, dests: newDestinations()}
	t.last.Store(s.cfg.Now().UnixNano())
	s.add(t, port)
	defer s.remove(t, port)
	s.m.opened.Inc()
	s.m.tunnels.Inc()
	defer s.m.tunnels.Dec()
	s.cfg.Logger.Info("tunnel open", "peer", id.Short(), "presence", presence)

	stopClose := context.AfterFunc(ctx, func() { udp.Close() })
	defer stopClose()
	errc := make(chan error, 1)
	go func() { errc <- s.down(ctx, ws, udp, t) }()
	err = s.up(ctx, ws, udp, t, client) // ends when the tunnel does
	cancel()
	<-errc
	return err
}

func (s *Server) add(t *tunnel, port uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tunnels[t] = struct{}{}
	s.ports[port]++
	if !s.sweeping {
		s.sweeping = true
		go s.sweepLoop()
	}
}

func (s *Server) remove(t *tunnel, port uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tunnels, t)
	if s.ports[port]--; s.ports[port] <= 0 {
		delete(s.ports, port)
	}
}

// sweepLoop runs the idle sweep while any tunnel is open.
func (s *Server) sweepLoop() {
	tk := time.NewTicker(s.cfg.sweepEvery)
	defer tk.Stop()
	for range tk.C {
		if s.sweep() == 0 {
			s.mu.Lock()
			if len(s.tunnels) == 0 {
				s.sweeping = false
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
		}
	}
}

// sweep closes the tunnels whose client has sent nothing for IdleTimeout
// and returns how many stay open.
func (s *Server) sweep() int {
	now := s.cfg.Now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	for t := range s.tunnels {
		if now-t.last.Load() >= int64(s.cfg.IdleTimeout) {
			s.m.closed.WithLabelValues("idle").Inc()
			t.cancel()
			delete(s.tunnels, t)
		}
	}
	return len(s.tunnels)
}

// up carries datagrams from the tunnel out of the presence socket.
func (s *Server) up(ctx context.Context, ws *websocket.Conn, udp *net.UDPConn, t *tunnel, client netip.Addr) error {
	pps := rate.NewLimiter(rate.Limit(s.cfg.Rate), s.cfg.Burst)
	bps := rate.NewLimiter(rate.Limit(s.cfg.ByteRate), int(byteBurst(s.cfg.ByteRate)))
	var toServers *rate.Limiter // ServerRate; made with the first datagram to a server
	for {
		typ, b, err := ws.Read(ctx)
		if err != nil {
			return err
		}
		if typ != websocket.MessageBinary {
			s.m.dropped.WithLabelValues(dropMalformed).Inc()
			continue
		}
		dst, payload, err := streamclient.ParseDatagram(b)
		if err != nil {
			s.m.dropped.WithLabelValues(dropMalformed).Inc()
			continue
		}
		now := s.cfg.Now()
		t.last.Store(now.UnixNano())
		if !pps.AllowN(now, 1) {
			s.m.dropped.WithLabelValues(dropRate).Inc()
			continue
		}
		if reason := s.checkDest(dst); reason != "" {
			s.m.dropped.WithLabelValues(reason).Inc()
			continue
		}
		if s.toServer(dst, payload) {
			if toServers == nil {
				toServers = rate.NewLimiter(rate.Limit(s.cfg.ServerRate), int(max(1, s.cfg.ServerBurst)))
			}
			if !toServers.AllowN(now, 1) {
				s.m.dropped.WithLabelValues(dropServerRate).Inc()
				continue
			}
		}
		if reason := t.dests.allow(dst, now.UnixNano(), &s.cfg); reason != "" {
			s.m.dropped.WithLabelValues(reason).Inc()
			continue
		}
		if !bps.AllowN(now, len(payload)) {
			s.m.dropped.WithLabelValues(dropByteRate).Inc()
			continue
		}
		if !s.ipBytes.AllowN(client, now.UnixNano(), float64(len(payload))) {
			s.m.dropped.WithLabelValues(dropIPByteRate).Inc()
			continue
		}
		if _, err := udp.WriteToUDPAddrPort(payload, dst); err != nil {
			s.m.dropped.WithLabelValues(dropSend).Inc()
			continue
		}
		s.m.packets.WithLabelValues("up").Inc()
		s.m.bytes.WithLabelValues("up").Add(float64(len(payload)))
	}
}

// down carries datagrams arriving at the presence socket into the tunnel.
// A client that does not take one within WriteTimeout loses the tunnel:
// nothing queues beyond the socket's buffer.
func (s *Server) down(ctx context.Context, ws *websocket.Conn, udp *net.UDPConn, t *tunnel) error {
	lim := downLimits{
		pps:       rate.NewLimiter(rate.Limit(s.cfg.Rate), s.cfg.Burst),
		bps:       rate.NewLimiter(rate.Limit(s.cfg.ByteRate), int(byteBurst(s.cfg.ByteRate))),
		strangers: rate.NewLimiter(rate.Limit(s.cfg.UnsolicitedRate), s.cfg.UnsolicitedBurst),
	}
	for {
		b, n, from, err := recvPresence(udp)
		if err != nil {
			return err
		}
		err = s.downOne(ctx, ws, t, &lim, b, n, from)
		putBuf(b)
		if err != nil {
			return err
		}
	}
}

// downLimits are a tunnel's inbound budgets. The presence address is the
// client's public address, which the rendezvous hands to whoever connects
// to it, so anyone can send there: datagrams from sources the tunnel has
// not sent to (unsolicited) draw on strangers alone, and cannot spend
// pps and bps, which carry the answers of the servers and peers the
// client talks to.
type downLimits struct {
	pps, bps  *rate.Limiter
	strangers *rate.Limiter
}

// downOne hands the client one datagram that arrived at its presence: the
// payload of n bytes at (*b)[addrLen:], from from.
func (s *Server) downOne(ctx context.Context, ws *websocket.Conn, t *tunnel, lim *downLimits, b *[]byte, n int, from netip.AddrPort) error {
	if n > streamclient.MaxPayload {
		s.m.dropped.WithLabelValues(dropTooLarge).Inc()
		return nil
	}
	now := s.cfg.Now()
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if t.dests.solicited(from, now.UnixNano(), int64(s.cfg.DestinationTTL)) {
		if !lim.pps.AllowN(now, 1) {
			s.m.dropped.WithLabelValues(dropRate).Inc()
			return nil
		}
		if !lim.bps.AllowN(now, n) {
			s.m.dropped.WithLabelValues(dropByteRate).Inc()
			return nil
		}
		// Only an answer lifts ProbeRate toward its address. An
		// unsolicited datagram (a peer's first packet, or one spoofed
		// from a victim's address) is delivered below but proves nothing.
		t.dests.heardFrom(from.Addr(), now.UnixNano(), s.cfg.MaxDestinations)
	} else if !lim.strangers.AllowN(now, 1) {
		// At most MaxPayload bytes each: no byte bucket of its own.
		s.m.dropped.WithLabelValues(dropStrangers).Inc()
		return nil
	}
	out := wire.AppendAddr((*b)[:0], from)[:streamclient.AddrLen+n] // the payload is already in place
	wctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	err := ws.Write(wctx, websocket.MessageBinary, out)
	timedOut := errors.Is(wctx.Err(), context.DeadlineExceeded)
	cancel()
	if err != nil {
		if timedOut {
			s.m.closed.WithLabelValues("write_timeout").Inc()
		}
		return err
	}
	s.m.packets.WithLabelValues("down").Inc()
	s.m.bytes.WithLabelValues("down").Add(float64(n))
	return nil
}
