package turnrelay

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/sockopt"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/keymesh/keymesh/internal/testutil/wait"
)

var testSecret = []byte("0123456789abcdef-test-secret")

const testRealm = "keymesh.test"

// testServer is a server on loopback with its addresses and registry.
type testServer struct {
	*Server
	udp, tcp string
	reg      *prometheus.Registry
}

// startServer starts a server on 127.0.0.1 with `sockets` SO_REUSEPORT UDP
// sockets and one TCP listener; mod may adjust the Config.
func startServer(t testing.TB, sockets int, mod func(*Config)) *testServer {
	t.Helper()
	ctx := context.Background()
	conns, err := sockopt.ListenUDPGroup(ctx, "127.0.0.1:0", sockets)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := sockopt.ListenTCP(ctx, "127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := Config{
		Listeners:  []net.Listener{ln},
		Realm:      testRealm,
		Secret:     testSecret,
		Registerer: reg,
		// The tests' peers are on loopback, which only an operator's
		// range lets a relay reach.
		AllowDestinations: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		// Every test client shares 127.0.0.1; TestAllocationRate tests
		// the per-source rate.
		AllocationRate: -1,
	}
	for _, c := range conns {
		cfg.PacketConns = append(cfg.PacketConns, c)
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &testServer{Server: s, udp: conns[0].LocalAddr().String(), tcp: ln.Addr().String(), reg: reg}
}

// newClient returns a pion TURN client over a fresh UDP socket (or, with
// tcp, a TCP connection) to the server, listening.
func newClient(t *testing.T, ts *testServer, username, password string, tcp bool) *turn.Client {
	t.Helper()
	var (
		conn   net.PacketConn
		server = ts.udp
	)
	if tcp {
		c, err := net.DialTimeout("tcp", ts.tcp, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn, server = turn.NewSTUNConn(c), ts.tcp
	} else {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conn = c
	}
	cl, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server,
		TURNServerAddr: server,
		Username:       username,
		Password:       password,
		Conn:           conn,
		RTO:            200 * time.Millisecond,
		LoggerFactory:  pionLogs{l: slog.New(slog.DiscardHandler)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cl.Close()
		conn.Close()
	})
	return cl
}

// allocate requests an allocation with a deadline.
func allocate(cl *turn.Client) (net.PacketConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cl.AllocateWithContext(ctx)
}

// echoPeer is a UDP echo server on loopback.
func echoPeer(t *testing.T) *net.UDPAddr {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			c.WriteToUDP(buf[:n], from)
		}
	}()
	return c.LocalAddr().(*net.UDPAddr)
}

// waitFor polls cond for up to 5 s (wait.For).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.For(t, 5*time.Second, what, cond)
}

// value reads a gauge's or counter's current value.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	case d.Counter != nil:
		return d.Counter.GetValue()
	}
	t.Fatalf("metric %v is neither gauge nor counter", m.Desc())
	return 0
}

func gauge(t *testing.T, ts *testServer) float64 { return value(t, ts.metrics.allocationsActive) }

func authFailures(t *testing.T, ts *testServer, reason string) float64 {
	return value(t, ts.metrics.authFailures.WithLabelValues(reason))
}
