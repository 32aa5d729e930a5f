package streamrelay

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/keymesh/keymesh/internal/streamclient"

	"github.com/keymesh/keymesh/internal/testutil/testclock"
	"github.com/keymesh/keymesh/internal/testutil/wait"
)

// clock is an injected clock the tests move by hand.
type clock = testclock.Clock

func newClock() *clock { return testclock.New(time.Now()) }

// waitFor polls cond until it holds; it fails the test after 10 s (a bound
// on a broken defence, not a measurement).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	wait.For(t, 10*time.Second, what, cond)
}

// recorder is a UDP listener on loopback that counts what arrives and, when
// answer is set, echoes it.
type recorder struct {
	c      *net.UDPConn
	n      atomic.Int64
	answer atomic.Bool
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &recorder{c: c}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			r.n.Add(1)
			if r.answer.Load() {
				_, _ = c.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	return r
}

func (r *recorder) addr() net.Addr { return r.c.LocalAddr() }

func (r *recorder) port() uint16 { return r.c.LocalAddr().(*net.UDPAddr).AddrPort().Port() }

func dial(t *testing.T, target streamclient.Target) (*streamclient.Tunnel, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tun, err := streamclient.Dial(ctx, target, ident(t), nil)
	if err == nil {
		t.Cleanup(func() { tun.Close() })
	}
	return tun, err
}

func mustDial(t *testing.T, target streamclient.Target) *streamclient.Tunnel {
	t.Helper()
	tun, err := dial(t, target)
	if err != nil {
		t.Fatal(err)
	}
	return tun
}

func (s *Server) dropped(reason string) float64 {
	return value(s.m.dropped.WithLabelValues(reason))
}

func (s *Server) sent() float64 { return value(s.m.packets.WithLabelValues("up")) }

// TestRefusesLoopbackByDefault is the open-proxy attack on loopback: a
// fresh key opens a tunnel and sends to a service on the relay's own
// 127.0.0.1. Nothing arrives; every datagram is counted as refused.
func TestRefusesLoopbackByDefault(t *testing.T) {
	target, srv := startRelay(t, func(c *Config) { c.AllowDestinations = nil })
	rec := newRecorder(t)
	tun := mustDial(t, target)
	for i := 0; i < 5; i++ {
		if _, err := tun.WriteTo([]byte("to an internal service"), rec.addr()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "5 refusals", func() bool { return srv.dropped(dropDestOwn)+srv.dropped(dropDestDenied) == 5 })
	if n := rec.n.Load(); n != 0 || srv.sent() != 0 {
		t.Fatalf("%d datagrams reached loopback (%v sent)", n, srv.sent())
	}
}

// TestCheckDest is the destination policy over the ranges the tests cannot
// send to from the host (the lab test proves them with real sockets).
func TestCheckDest(t *testing.T) {
	pub := netip.MustParseAddr("203.0.113.1")
	srv, err := New(Config{
		PresenceIP: netip.MustParseAddr("10.0.0.5"), AdvertiseIP: pub,
		OwnAddrs: []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("127.0.0.1")},
		OwnPorts: []uint16{3479},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.ports[40000] = 1 // a live presence
	for dst, want := range map[string]string{
		"203.0.113.9:53":          "",             // the internet
		"198.51.100.7:4000":       "",             // the internet
		"[2001:db8::1]:4000":      "",             // the internet (documentation range, not refused)
		"203.0.113.1:3479":        "",             // this relay's ticket port at its public address
		"203.0.113.1:40000":       "",             // another tunnel's presence
		"10.0.0.5:3479":           "",             // the ticket port at the presence address
		"203.0.113.1:22":          dropDestOwn,    // any other port of its own
		"10.0.0.5:6379":           dropDestOwn,    // Redis beside it
		"127.0.0.1:3479":          dropDestOwn,    // loopback, even at a public port
		"127.0.0.2:53":            dropDestDenied, // loopback
		"169.254.169.254:80":      dropDestDenied, // cloud metadata
		"10.1.2.3:53":             dropDestDenied, // private
		"192.168.1.1:53":          dropDestDenied, // private
		"100.64.0.1:53":           dropDestDenied, // CGNAT
		"224.0.0.251:5353":        dropDestDenied, // multicast
		"255.255.255.255:67":      dropDestDenied, // broadcast
		"[::1]:53":                dropDestDenied, // loopback
		"[fd00::1]:53":            dropDestDenied, // unique-local
		"[fe80::1]:53":            dropDestDenied, // link-local
		"[::ffff:10.0.0.1]:53":    dropDestDenied, // mapped private
		"[64:ff9b::a9fe:a9fe]:80": dropDestDenied, // NAT64 of the metadata service
	} {
		if got := srv.checkDest(netip.MustParseAddrPort(dst)); got != want {
			t.Errorf("%s: %q, want %q", dst, got, want)
		}
	}
	allowed, _ := New(Config{PresenceIP: pub, OwnAddrs: []netip.Addr{}, AllowDestinations: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}})
	if got := allowed.checkDest(netip.MustParseAddrPort("10.1.2.3:53")); got != "" {
		t.Errorf("operator-allowed range refused: %q", got)
	}
	if got := allowed.checkDest(netip.MustParseAddrPort("10.2.0.1:53")); got != dropDestDenied {
		t.Errorf("range outside the allowed one: %q", got)
	}
}

// TestTunnelsPerIPCapped: one address opens tunnels until refused; another
// tunnel from it opens only after one closes.
func TestTunnelsPerIPCapped(t *testing.T) {
	target, srv := startRelay(t, func(c *Config) { c.MaxTunnelsPerIP = 3 })
	var tuns []*streamclient.Tunnel
	for i := 0; i < 3; i++ {
		tuns = append(tuns, mustDial(t, target))
	}
	if _, err := dial(t, target); err == nil {
		t.Fatal("fourth tunnel from one address opened")
	}
	if got := value(srv.m.refused.WithLabelValues("per_ip")); got != 1 {
		t.Fatalf("per_ip refusals %v, want 1", got)
	}
	tuns[0].Close()
	waitFor(t, "the closed tunnel to leave", func() bool { return srv.Open() == 2 })
	mustDial(t, target)
}

// TestGlobalTunnelCap: the relay as a whole refuses beyond MaxTunnels.
func TestGlobalTunnelCap(t *testing.T) {
	target, srv := startRelay(t, func(c *Config) { c.MaxTunnels = 2 })
	mustDial(t, target)
	mustDial(t, target)
	if _, err := dial(t, target); err == nil {
		t.Fatal("third tunnel opened past MaxTunnels 2")
	}
	if got := value(srv.m.refused.WithLabelValues("full")); got != 1 {
		t.Fatalf("full refusals %v, want 1", got)
	}
}

// TestOpenRateLimited: opening and closing tunnels in a loop from one
// address is held to OpenRate once the burst is spent.
func TestOpenRateLimited(t *testing.T) {
	clk := newClock()
	target, _ := startRelay(t, func(c *Config) { c.Now = clk.Now; c.OpenRate = 1; c.OpenBurst = 3 })
	for i := 0; i < 3; i++ {
		mustDial(t, target).Close()
	}
	if _, err := dial(t, target); err == nil {
		t.Fatal("open past the burst allowed without time passing")
	}
	clk.Add(1100 * time.Millisecond)
	mustDial(t, target)
}

// TestHandshakeTimeout: a client that upgrades and never says hello loses
// the connection, and its place, after HandshakeTimeout.
func TestHandshakeTimeout(t *testing.T) {
	target, srv := startRelay(t, func(c *Config) { c.HandshakeTimeout = 50 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := httpClient(target)
	ws, _, err := websocket.Dial(ctx, target.URL, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if _, _, err := ws.Read(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("silent client kept its tunnel: %v", err)
	}
	waitFor(t, "the silent client's place to free", func() bool { return srv.Open() == 0 })
}

// TestIdleTunnelClosed: a tunnel whose client sends nothing is closed after
// IdleTimeout on the injected clock; a datagram restarts the wait.
func TestIdleTunnelClosed(t *testing.T) {
	clk := newClock()
	target, srv := startRelay(t, func(c *Config) {
		c.Now = clk.Now
		c.IdleTimeout = time.Minute
		c.sweepEvery = time.Hour // the test sweeps by hand
	})
	rec := newRecorder(t)
	tun := mustDial(t, target)
	waitFor(t, "the tunnel to register", func() bool { return srv.sweep() == 1 })
	clk.Add(50 * time.Second)
	if _, err := tun.WriteTo([]byte("keepalive"), rec.addr()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the keepalive", func() bool { return rec.n.Load() == 1 })
	clk.Add(50 * time.Second) // 100 s after the open, 50 s after the keepalive
	if n := srv.sweep(); n != 1 {
		t.Fatalf("tunnel with a keepalive 50 s ago closed (%d open)", n)
	}
	clk.Add(11 * time.Second)
	if n := srv.sweep(); n != 0 {
		t.Fatalf("%d tunnels open after 61 s idle", n)
	}
	select {
	case <-tun.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the client's tunnel did not end")
	}
	waitFor(t, "its place to free", func() bool { return srv.Open() == 0 })
}

// TestStalledClientClosed: a client that stops reading while datagrams
// arrive at its presence loses the tunnel instead of holding a queue.
func TestStalledClientClosed(t *testing.T) {
	target, srv := startRelay(t, func(c *Config) {
		c.WriteTimeout = 100 * time.Millisecond
		c.Rate, c.Burst, c.ByteRate = 1e9, 1e6, 1e12
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, target.URL, &websocket.DialOptions{HTTPClient: httpClient(target)})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageBinary, streamclient.AppendClientHello(nil, ident(t), time.Now())); err != nil {
		t.Fatal(err)
	}
	_, b, err := ws.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	presence, err := streamclient.ParseServerHello(b)
	if err != nil {
		t.Fatal(err)
	}
	// The client reads nothing more; a sender floods its presence.
	flood, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()
	payload := bytes.Repeat([]byte("f"), streamclient.MaxPayload)
	for srv.Open() != 0 {
		if ctx.Err() != nil {
			t.Fatal("a client that reads nothing still holds its tunnel")
		}
		for i := 0; i < 64; i++ {
			_, _ = flood.WriteToUDPAddrPort(payload, presence)
		}
		time.Sleep(time.Millisecond)
	}
	if got := value(srv.m.closed.WithLabelValues("write_timeout")); got != 1 {
		t.Fatalf("write_timeout closes %v, want 1", got)
	}
}

// TestProbeRateUntilAnswered: a tunnel sending to a destination that never
// answers gets ProbeBurst datagrams through, then ProbeRate; once the
// destination answers, the tunnel's own rate applies.
func TestProbeRateUntilAnswered(t *testing.T) {
	clk := newClock()
	target, srv := startRelay(t, func(c *Config) { c.Now = clk.Now; c.ProbeRate = 10; c.ProbeBurst = 5 })
	victim := newRecorder(t)
	tun := mustDial(t, target)
	for i := 0; i < 50; i++ {
		if _, err := tun.WriteTo([]byte("flood"), victim.addr()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "50 datagrams handled", func() bool { return srv.sent()+srv.dropped(dropProbeRate) == 50 })
	if srv.sent() != 5 {
		t.Fatalf("%v datagrams reached a destination that never answered, want the burst of 5", srv.sent())
	}
	clk.Add(300 * time.Millisecond) // 3 more
	for i := 0; i < 50; i++ {
		_, _ = tun.WriteTo([]byte("flood"), victim.addr())
	}
	waitFor(t, "100 datagrams handled", func() bool { return srv.sent()+srv.dropped(dropProbeRate) == 100 })
	if srv.sent() != 8 {
		t.Fatalf("%v sent after 300 ms more, want 8", srv.sent())
	}
	// The destination answers: now it is a peer, not a victim.
	victim.answer.Store(true)
	clk.Add(time.Second)
	_, _ = tun.WriteTo([]byte("hello"), victim.addr())
	_ = tun.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := tun.ReadFrom(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	// The answer read may be to a late "flood" datagram, read by the
	// recorder after it began answering, with "hello" still on its way:
	// count from the moment "hello" went too.
	waitFor(t, "the hello sent", func() bool { return srv.sent() == 9 })
	before := srv.sent()
	for i := 0; i < 100; i++ {
		_, _ = tun.WriteTo([]byte("data"), victim.addr())
	}
	waitFor(t, "the answered destination's datagrams", func() bool { return srv.sent() == before+100 })
}

// TestDestinationsCapped: a tunnel spraying distinct destinations gets
// MaxDestinations of them; more only as old ones go unused for
// DestinationTTL.
func TestDestinationsCapped(t *testing.T) {
	clk := newClock()
	target, srv := startRelay(t, func(c *Config) { c.Now = clk.Now; c.MaxDestinations = 4; c.DestinationTTL = 30 * time.Second })
	tun := mustDial(t, target)
	dst := func(i int) net.Addr { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 20000 + i} }
	for i := 0; i < 10; i++ {
		_, _ = tun.WriteTo([]byte("x"), dst(i))
	}
	waitFor(t, "10 datagrams handled", func() bool { return srv.sent()+srv.dropped(dropDestsFull)+srv.dropped(dropSend) == 10 })
	if got := srv.dropped(dropDestsFull); got != 6 {
		t.Fatalf("%v refused as too many destinations, want 6", got)
	}
	_, _ = tun.WriteTo([]byte("x"), dst(0)) // a known destination still goes
	clk.Add(31 * time.Second)
	_, _ = tun.WriteTo([]byte("x"), dst(9)) // the old ones expired
	waitFor(t, "12 datagrams handled", func() bool { return srv.sent()+srv.dropped(dropDestsFull)+srv.dropped(dropSend) == 12 })
	if got := srv.dropped(dropDestsFull); got != 6 {
		t.Fatalf("%v refused, want still 6", got)
	}
}

// TestByteRates: a tunnel's bytes per second, and those of all tunnels of
// one client address together, are bounded.
func TestByteRates(t *testing.T) {
	clk := newClock()
	target, srv := startRelay(t, func(c *Config) {
		c.Now = clk.Now
		c.ProbeBurst = 1000
		c.ByteRate = 40000   // burst 10,000 bytes
		c.IPByteRate = 60000 // burst 15,000 bytes
	})
	rec := newRecorder(t)
	a, b := mustDial(t, target), mustDial(t, target)
	kb := make([]byte, 1000)
	for i := 0; i < 20; i++ {
		_, _ = a.WriteTo(kb, rec.addr())
	}
	waitFor(t, "20 datagrams handled", func() bool { return srv.sent()+srv.dropped(dropByteRate) == 20 })
	if srv.sent() != 10 {
		t.Fatalf("one tunnel sent %v KB at once, want its burst of 10", srv.sent())
	}
	for i := 0; i < 20; i++ {
		_, _ = b.WriteTo(kb, rec.addr())
	}
	waitFor(t, "40 datagrams handled", func() bool {
		return srv.sent()+srv.dropped(dropByteRate)+srv.dropped(dropIPByteRate) == 40
	})
	if srv.sent() != 15 {
		t.Fatalf("two tunnels of one address sent %v KB at once, want the address's burst of 15", srv.sent())
	}
}

// TestAdvertisesPublicAddress: presences bound on the unspecified address
// (as on AWS, where the public IPv4 is not on the interface) are announced
// at the advertised address, with the port of the real socket.
func TestAdvertisesPublicAddress(t *testing.T) {
	pub := netip.MustParseAddr("203.0.113.7")
	target, _ := startRelay(t, func(c *Config) { c.PresenceIP = netip.IPv4Unspecified(); c.AdvertiseIP = pub })
	rec := newRecorder(t)
	rec.answer.Store(true)
	tun := mustDial(t, target)
	if tun.Presence().Addr() != pub {
		t.Fatalf("presence %v, want at %v", tun.Presence(), pub)
	}
	from := make(chan netip.AddrPort, 1)
	go func() {
		buf := make([]byte, 100)
		_ = tun.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, a, err := tun.ReadFromUDPAddrPort(buf)
		if err != nil {
			from <- netip.AddrPort{}
			return
		}
		from <- a
	}()
	if _, err := tun.WriteTo([]byte("ping"), rec.addr()); err != nil {
		t.Fatal(err)
	}
	if a := <-from; a.Port() != rec.port() {
		t.Fatalf("echo came back from %v", a)
	}
	if _, err := New(Config{PresenceIP: netip.IPv4Unspecified()}); err == nil {
		t.Fatal("unspecified presence without an advertised address accepted")
	}
	if _, err := New(Config{PresenceIP: netip.MustParseAddr("10.0.0.5")}); err != nil {
		t.Fatalf("private presence alone: %v", err)
	}
}

func httpClient(target streamclient.Target) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: target.TLS(nil)}}
}

// value reads a counter.
func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// rawTunnel opens a tunnel from localIP (a loopback address) by hand.
func rawTunnel(t *testing.T, target streamclient.Target, localIP string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: target.TLS(nil), DialContext: d.DialContext}}
	ws, _, err := websocket.Dial(ctx, target.URL, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return err
	}
	t.Cleanup(func() { ws.CloseNow() })
	if err := ws.Write(ctx, websocket.MessageBinary, streamclient.AppendClientHello(nil, ident(t), time.Now())); err != nil {
		return err
	}
	_, b, err := ws.Read(ctx)
	if err != nil {
		return err
	}
	_, err = streamclient.ParseServerHello(b)
	return err
}

// TestTunnelsPerNetCapped: addresses of one /24 share a cap, so rotating
// addresses within a site (or /64s within an IPv6 /48) buys nothing.
func TestTunnelsPerNetCapped(t *testing.T) {
	target, srv := startRelay(t, func(c *Config) { c.MaxTunnelsPerIP = 2; c.MaxTunnelsPerNet = 3 })
	for _, ip := range []string{"127.0.0.1", "127.0.0.1", "127.0.0.2"} {
		if err := rawTunnel(t, target, ip); err != nil {
			t.Fatalf("from %s: %v", ip, err)
		}
	}
	if err := rawTunnel(t, target, "127.0.0.3"); err == nil {
		t.Fatal("fourth tunnel from one /24 opened")
	}
	if got := value(srv.m.refused.WithLabelValues("per_net")); got != 1 {
		t.Fatalf("per_net refusals %v, want 1", got)
	}
	if got := clientNet(netip.MustParseAddr("2001:db8:1:2::9")); got != netip.MustParsePrefix("2001:db8:1::/48") {
		t.Fatalf("IPv6 client net %v", got)
	}
}

// TestListenerConnRate: a source opening TCP connections in a loop is cut
// off at accept, before each would cost a TLS handshake.
func TestListenerConnRate(t *testing.T) {
	clk := newClock()
	srv, err := New(Config{PresenceIP: netip.MustParseAddr("127.0.0.1"), Now: clk.Now, OpenRate: 1, OpenBurst: 3, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln = srv.Listener(ln)
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	waitFor(t, "5 connections handled", func() bool {
		return len(accepted)+int(value(srv.m.refused.WithLabelValues("conn_rate"))) == 5
	})
	if len(accepted) != 3 {
		t.Fatalf("%d connections accepted at once, want the burst of 3", len(accepted))
	}
	for i := 0; i < 3; i++ {
		(<-accepted).Close()
	}
	clk.Add(time.Second)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("a connection a second later was not accepted")
	}
}

// TestIdleSweepRuns: the sweep runs by itself while tunnels are open.
func TestIdleSweepRuns(t *testing.T) {
	clk := newClock()
	target, srv := startRelay(t, func(c *Config) {
		c.Now = clk.Now
		c.IdleTimeout = time.Minute
		c.sweepEvery = 5 * time.Millisecond
	})
	tun := mustDial(t, target)
	waitFor(t, "the tunnel to register", func() bool { srv.mu.Lock(); defer srv.mu.Unlock(); return len(srv.tunnels) == 1 })
	clk.Add(2 * time.Minute)
	select {
	case <-tun.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("an idle tunnel stayed open")
	}
	if got := value(srv.m.closed.WithLabelValues("idle")); got != 1 {
		t.Fatalf("idle closes %v, want 1", got)
	}
}

// TestListenerRefusesClientAtCap is the tunnel-exhaustion attack's churn:
// a client holding its tunnel cap that keeps connecting cost the relay a
// TLS handshake, a request and an idle keep-alive connection per attempt.
// Now the connection is closed on accept, before the handshake.
func TestListenerRefusesClientAtCap(t *testing.T) {
	relayID := ident(t)
	srv, err := New(Config{PresenceIP: netip.MustParseAddr("127.0.0.1"), MaxTunnelsPerIP: 1, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := relayID.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.Listener = srv.Listener(ts.Listener)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	target, err := streamclient.ParseTarget(strings.Replace(ts.URL, "https://", "wss://", 1) + streamclient.Path + "#" + relayID.ID().String())
	if err != nil {
		t.Fatal(err)
	}
	mustDial(t, target)
	c, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("a connection from a client at its tunnel cap: read %d, %v; want it closed on accept", n, err)
	}
	if got := value(srv.m.refused.WithLabelValues("per_ip")); got != 1 {
		t.Fatalf("per_ip refusals %v, want 1", got)
	}
}

// TestCheckDestAnycast is the anycast front door: every relay instance
// holds the anycast address X on an interface, and a tunnelled peer is told
// to bind to its ticket relay at X. The relay's public keymesh ports are
// reachable at X (and count against ServerRate there); every other port of
// X stays refused, so a tunnel cannot reach the admin endpoint or Redis
// through an interface address that is neither the presence nor the
// advertised one.
func TestCheckDestAnycast(t *testing.T) {
	pub, anycast := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("198.51.100.53")
	srv, err := New(Config{
		PresenceIP: pub,
		OwnAddrs:   []netip.Addr{anycast, netip.MustParseAddr("127.0.0.1")},
		OwnPorts:   []uint16{3479, 3478}, ServerPorts: []uint16{3479},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.ports[40000] = 1 // a live presence
	for dst, want := range map[string]string{
		"198.51.100.53:3479":  "",          // the ticket relay at the anycast address
		"198.51.100.53:3478":  "",          // TURN there
		"198.51.100.53:40000": "",          // another tunnel's presence there
		"198.51.100.53:9090":  dropDestOwn, // the admin endpoint
		"198.51.100.53:6379":  dropDestOwn, // Redis
		"198.51.100.53:53":    dropDestOwn, // any other port
		"127.0.0.1:3479":      dropDestOwn, // loopback, even at a public port
	} {
		if got := srv.checkDest(netip.MustParseAddrPort(dst)); got != want {
			t.Errorf("%s: %q, want %q", dst, got, want)
		}
	}
	// The ticket relay at X is a keymesh server: a tunnel's datagrams to it
	// count against ServerRate as they do at the presence address.
	if !srv.toServer(netip.MustParseAddrPort("198.51.100.53:3479"), []byte{0}) {
		t.Error("the ticket relay at the anycast address does not count against ServerRate")
	}
	if srv.toServer(netip.MustParseAddrPort("127.0.0.1:3479"), []byte{0}) {
		t.Error("loopback counted as a keymesh server")
	}
}
