package turnrelay

import (
	"io"
	"net"
	"testing"
	"time"

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
		cfg:        Config{Now: func() time.Time { return now }},
		metrics:    m,
		bindings:   ratelimit.New(ratelimit.Config{PerSecond: 1, Burst: 1}),
		challenges: ratelimit.New(ratelimit.Config{PerSecond: 1, Burst: burst}),
	}
	unauth, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedTransport(17), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	authed, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest),
		stun.NewUsername("u"), stun.NewRealm("r"), stun.NewNonce("n"), stun.NewShortTermIntegrity("pass"))
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
