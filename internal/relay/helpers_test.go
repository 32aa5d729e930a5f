package relay

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/obs"
	"github.com/keymesh/keymesh/internal/relayclient"
	"github.com/keymesh/keymesh/internal/testutil/metricstest"
	"github.com/keymesh/keymesh/internal/testutil/testclock"
	"github.com/keymesh/keymesh/internal/wire"
)

// clock is a settable clock for tests.
type clock = testclock.Clock

func newClock() *clock { return testclock.New(time.Now()) }

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func mustKeys(t testing.TB, seal byte, keys map[byte][]byte, now func() time.Time) *crypto.TicketKeys {
	t.Helper()
	tk, err := crypto.NewTicketKeys(seal, keys, now)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// genericConn hides a *net.UDPConn behind the net.PacketConn interface so
// that Serve takes its one-datagram-at-a-time path.
type genericConn struct{ net.PacketConn }

// serveModes are the three I/O paths Serve has.
var serveModes = []string{"batch", "single", "generic"}

// testRelay is a running Server on a loopback socket.
type testRelay struct {
	srv   *Server
	conn  *net.UDPConn
	addr  *net.UDPAddr
	admin *obs.Admin
	done  chan error
	stop  context.CancelFunc
}

// startRelay serves cfg on a fresh socket bound to bind (e.g.
// "127.0.0.1:0") in the given mode.
func startRelay(t testing.TB, cfg Config, mode, bind string) *testRelay {
	t.Helper()
	admin := obs.NewAdmin("relay", nil)
	cfg.Registerer = admin.Registry
	if mode == "single" {
		cfg.Batch = 1
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ua, err := net.ResolveUDPAddr("udp", bind)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, srv, admin, conn, mode)
}

func serveOn(t testing.TB, srv *Server, admin *obs.Admin, conn *net.UDPConn, mode string) *testRelay {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &testRelay{srv: srv, conn: conn, addr: conn.LocalAddr().(*net.UDPAddr), admin: admin, done: make(chan error, 1), stop: cancel}
	var pc net.PacketConn = conn
	if mode == "generic" {
		pc = genericConn{conn}
	}
	go func() { r.done <- srv.Serve(ctx, pc) }()
	t.Cleanup(func() { r.close(t) })
	deadline := time.Now().Add(2 * time.Second)
	for srv.Healthy(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatal("relay never started serving")
		}
		time.Sleep(time.Millisecond)
	}
	return r
}

// close stops Serve and closes the socket; safe to call twice.
func (r *testRelay) close(t testing.TB) {
	if r.stop == nil {
		return
	}
	r.stop()
	r.stop = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Serve returned %v after cancel, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Serve did not return after cancel")
	}
	r.conn.Close()
}

// peer is a loopback UDP socket with an identity.
type peer struct {
	id   *crypto.Identity
	conn *net.UDPConn
}

func newPeer(t testing.TB, bind string) *peer {
	t.Helper()
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	ua, err := net.ResolveUDPAddr("udp", bind)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &peer{id: id, conn: c}
}

func (p *peer) bind(t testing.TB, relay net.Addr) relayclient.Binding {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	b, err := relayclient.Bind(ctx, p.conn, relay, p.id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cookie asks the relay for p's cookie, as a first bind does: a cookieless
// bind, answered with a challenge.
func (p *peer) cookie(t testing.TB, relay net.Addr) crypto.Cookie {
	t.Helper()
	req := wire.AppendRelayBind(nil, p.id, time.Now(), crypto.Cookie{})
	p.send(t, relay, req)
	got := p.recv(t, 2*time.Second)
	c, err := wire.ParseRelayChallenge(got)
	if err != nil {
		t.Fatalf("no challenge to a cookieless bind: %v (got %x)", err, got)
	}
	if r, _ := wire.PeekRelayBind(req); c.Echo != r.Echo {
		t.Fatal("the challenge does not echo the bind")
	}
	return c.Cookie
}

func (p *peer) send(t testing.TB, to net.Addr, frame []byte) {
	t.Helper()
	if _, err := p.conn.WriteTo(frame, to); err != nil {
		t.Fatal(err)
	}
}

// recv returns the next datagram, or nil after wait.
func (p *peer) recv(t testing.TB, wait time.Duration) []byte {
	t.Helper()
	buf := make([]byte, 2048)
	p.conn.SetReadDeadline(time.Now().Add(wait))
	defer p.conn.SetReadDeadline(time.Time{})
	n, _, err := p.conn.ReadFrom(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// scrape fetches /metrics through the admin handler and parses it.
func scrape(t testing.TB, admin *obs.Admin) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	admin.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	mfs, err := metricstest.Parse(rec.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// value is the value of the metric name (with label reason=r when r != "").
func value(mfs map[string]*dto.MetricFamily, name, r string) float64 {
	mf, ok := mfs[name]
	if !ok {
		return -1
	}
	for _, m := range mf.GetMetric() {
		if r != "" {
			match := false
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == r {
					match = true
				}
			}
			if !match {
				continue
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

// waitMetrics polls /metrics until every want holds (name or name{reason}
// -> value), failing after two seconds with what it saw.
func waitMetrics(t testing.TB, admin *obs.Admin, want map[string]float64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		mfs := scrape(t, admin)
		bad := ""
		for k, v := range want {
			name, r := k, ""
			if i := bytes.IndexByte([]byte(k), '{'); i >= 0 {
				name, r = k[:i], k[i+1:len(k)-1]
			}
			if got := value(mfs, name, r); got != v {
				bad += " " + k + "=" + ftoa(got) + " (want " + ftoa(v) + ")"
			}
		}
		if bad == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics:%s", bad)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ftoa(f float64) string { return model.SampleValue(f).String() }

// relaySend builds a RelaySend frame from p with payload.
func relaySend(ticket []byte, p *peer, payload string) []byte {
	return wire.AppendRelaySend(nil, ticket, p.id.ID().Tag(), []byte(payload))
}

// expectRelayed waits for a Relayed frame at p and checks tag and payload.
func expectRelayed(t testing.TB, p *peer, from *peer, payload string) {
	t.Helper()
	got := p.recv(t, 2*time.Second)
	if got == nil {
		t.Fatalf("no Relayed frame carrying %q arrived", payload)
	}
	if got[0] != wire.TypeRelayed {
		t.Fatalf("got frame type %#x, want Relayed", got[0])
	}
	tag, pl, err := wire.ParseData(got)
	if err != nil {
		t.Fatal(err)
	}
	if tag != from.id.ID().Tag() || string(pl) != payload {
		t.Fatalf("got tag %x payload %q, want %x %q", tag, pl, from.id.ID().Tag(), payload)
	}
}
