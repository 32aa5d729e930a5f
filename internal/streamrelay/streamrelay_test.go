package streamrelay

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/addrpolicy"
	"github.com/keymesh/keymesh/internal/crypto"

	"github.com/keymesh/keymesh/internal/streamclient"
)

func ident(t testing.TB) *crypto.Identity {
	t.Helper()
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// startRelay serves a stream relay over TLS on loopback with a certificate
// made from the relay's identity, as a relay without ACME does. Loopback
// is an allowed destination (the tests' other ends live there) unless
// mutate changes the config.
func startRelay(t *testing.T, mutate ...func(*Config)) (streamclient.Target, *Server) {
	t.Helper()
	relayID := ident(t)
	cfg := Config{
		PresenceIP:        netip.MustParseAddr("127.0.0.1"),
		AllowDestinations: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Registerer:        prometheus.NewRegistry(),
	}
	for _, f := range mutate {
		f(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := relayID.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	target, err := streamclient.ParseTarget(strings.Replace(ts.URL, "https://", "wss://", 1) + streamclient.Path + "#" + relayID.ID().String())
	if err != nil {
		t.Fatal(err)
	}
	return target, srv
}

func TestTunnelCarriesDatagrams(t *testing.T) {
	target, srv := startRelay(t)
	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	seen := make(chan netip.AddrPort, 1)
	go func() {
		buf := make([]byte, 2000)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			select {
			case seen <- from:
			default:
			}
			_, _ = echo.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tun, err := streamclient.Dial(ctx, target, ident(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	if !tun.Presence().IsValid() || tun.Presence().Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("presence %v", tun.Presence())
	}
	msg := bytes.Repeat([]byte("x"), 1400)
	for i := 0; i < 20; i++ {
		if _, err := tun.WriteTo(msg, echo.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = tun.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 2000)
		n, from, err := tun.ReadFrom(buf)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], msg) || from.String() != echo.LocalAddr().String() {
			t.Fatalf("got %d bytes from %v", n, from)
		}
	}
	if got := <-seen; got != tun.Presence() {
		t.Fatalf("echo saw %v, presence is %v", got, tun.Presence())
	}
	if srv.Open() != 1 {
		t.Fatalf("open tunnels %d, want 1", srv.Open())
	}
	tun.Close()
	if _, _, err := tun.ReadFrom(make([]byte, 10)); err == nil {
		t.Fatal("read after close succeeded")
	}
}

func TestTunnelRefusesWrongPin(t *testing.T) {
	target, _ := startRelay(t)
	other := ident(t).ID()
	target.Pin = &other
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := streamclient.Dial(ctx, target, ident(t), nil); err == nil || !strings.Contains(err.Error(), "expected key") {
		t.Fatalf("dial with the wrong pin: %v", err)
	}
}

func TestReadDeadline(t *testing.T) {
	target, _ := startRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tun, err := streamclient.Dial(ctx, target, ident(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	_ = tun.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, _, err = tun.ReadFrom(make([]byte, 10))
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("want timeout, got %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("deadline not honoured")
	}
}

func TestServeHTTPRefusesNonUpgrade(t *testing.T) {
	srv, _ := New(Config{PresenceIP: netip.MustParseAddr("127.0.0.1")})
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, streamclient.Path, nil))
	if rec.Code == http.StatusSwitchingProtocols || rec.Code == http.StatusOK {
		t.Fatalf("plain GET got %d", rec.Code)
	}
}

// FuzzDestination runs tunnel datagrams through the decoder and the
// destination policy: whatever the bytes, a datagram the policy lets out is
// never to a refused range, and the per-tunnel table stays within its cap.
func FuzzDestination(f *testing.F) {
	for _, a := range []string{"203.0.113.1:4000", "169.254.169.254:80", "[::ffff:10.0.0.1]:53", "[64:ff9b::a9fe:a9fe]:80", "[2002:a00:1::1]:53", "127.0.0.1:3479", "198.51.100.9:3479"} {
		f.Add(streamclient.AppendDatagram(nil, netip.MustParseAddrPort(a), []byte("x")))
	}
	pub := netip.MustParseAddr("198.51.100.9")
	srv, err := New(Config{PresenceIP: pub, OwnAddrs: []netip.Addr{}, OwnPorts: []uint16{3479}, MaxDestinations: 8})
	if err != nil {
		f.Fatal(err)
	}
	d := newDestinations()
	var now int64
	f.Fuzz(func(t *testing.T, b []byte) {
		dst, _, err := streamclient.ParseDatagram(b)
		if err != nil {
			return
		}
		now += int64(time.Second)
		if srv.checkDest(dst) != "" {
			return
		}
		a := dst.Addr().Unmap()
		if a != pub && !(*addrpolicy.Policy)(nil).Allowed(a) {
			t.Fatalf("policy let %v out", dst)
		}
		_ = d.allow(dst, now, &srv.cfg)
		if len(d.sent) > srv.cfg.MaxDestinations || len(d.probes) > srv.cfg.MaxDestinations {
			t.Fatalf("%d destinations, %d probe buckets, cap %d", len(d.sent), len(d.probes), srv.cfg.MaxDestinations)
		}
	})
}
