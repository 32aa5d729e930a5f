package turnrelay

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/ratelimit"
	"github.com/pion/stun/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// queueConn is a PacketConn whose reads return queued datagrams, then EOF.
type queueConn struct {
	net.PacketConn
	q    [][]byte
	from net.Addr
}

func (c *queueConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if len(c.q) == 0 {
		return 0, nil, io.EOF
	}
	n := copy(p, c.q[0])
	c.q = c.q[1:]
	return n, c.from, nil
}

// TestUnauthenticatedFloodStopsAtRead: 10,000 unauthenticated Allocates
// from one (spoofed) source, on a clock that stands still, reach pion no
// more often than the source's challenge burst; the rest are dropped where
// they are read, before pion parses them and builds a 401. Authenticated
// requests from that source still pass. The old guard handed every request
// to pion and dropped only the answers.
func TestUnauthenticatedFloodStopsAtRead(t *testing.T) {
	const burst = 16
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	s := &Server{
		cfg:        Config{Now: func() time.Time { return now }, Realm: testRealm, Secret: testSecret},
		metrics:    m,
		bindings:   ratelimit.New(ratelimit.Config{PerSecond: 1, Burst: 1}),
		challenges: ratelimit.New(ratelimit.Config{PerSecond: 1, Burst: burst}),
		integrity:  ratelimit.NewBudget(1, 1, now.UnixNano()),
		verified:   newVerifiedSources(int64(verifiedTTL), maxVerifiedSources),
	}
	unauth, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedTransport(17), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	user, pass := crypto.TURNCredentials(testSecret, "u", time.Hour, now)
	authed, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest),
		stun.NewUsername(user), stun.NewRealm(testRealm), stun.NewNonce("n"), stun.NewLongTermIntegrity(user, testRealm, pass))
	if err != nil {
		t.Fatal(err)
	}
	q := make([][]byte, 0, 10_001)
	for range 10_000 {
		q = append(q, unauth.Raw)
	}
	q = append(q, authed.Raw)
	g := &guardConn{PacketConn: &queueConn{q: q, from: &net.UDPAddr{IP: net.IPv4(198, 51, 100, 9), Port: 3478}}, s: s}
	buf := make([]byte, 1500)
	passed, sawAuthed := 0, false
	for {
		n, _, err := g.ReadFrom(buf)
		if err != nil {
			break
		}
		if authenticated(buf[:n]) {
			sawAuthed = true
			continue
		}
		passed++
	}
	if passed != burst {
		t.Errorf("%d unauthenticated Allocates reached pion, want the challenge burst of %d", passed, burst)
	}
	if !sawAuthed {
		t.Error("an authenticated request from the flooded source was dropped")
	}
	if got := value(t, m.dropped.WithLabelValues(dropChallenge)); got != 10_000-burst {
		t.Errorf("dropped{challenge} = %v, want %d", got, 10_000-burst)
	}
}

// TestTCPConnsCappedPerNet: an IPv6 client opening TCP connections from a
// new /64 of its /48 each time (each /64 well under its own cap) is held to
// the per-network cap; another /48, and IPv4 /24s, count apart. The old
// count had no per-network cap, so one /48 held 65,536 x the per-/64 cap.
func TestTCPConnsCappedPerNet(t *testing.T) {
	const perSource, perNet = 64, 8
	c := newTCPConns()
	took := 0
	for i := range 100 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, byte(i), 15: 1})
		if c.take(a, perSource, perNet, -1) {
			took++
		}
	}
	if took != perNet {
		t.Fatalf("one /48 opened %d connections over 100 /64s, want the per-net cap of %d", took, perNet)
	}
	if !c.take(netip.MustParseAddr("2001:db8:2::1"), perSource, perNet, -1) {
		t.Error("another /48 was refused")
	}
	for i := range perNet {
		if !c.take(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), perSource, perNet, -1) {
			t.Fatalf("IPv4 connection %d of a /24 refused under the cap", i)
		}
	}
	if c.take(netip.MustParseAddr("198.51.100.200"), perSource, perNet, -1) {
		t.Error("an IPv4 /24 went over the per-net cap")
	}
	c.release(netip.MustParseAddr("2001:db8:1:5::1"))
	if !c.take(netip.MustParseAddr("2001:db8:1:ff::1"), perSource, perNet, -1) {
		t.Error("a released connection did not free its network's place")
	}
}
