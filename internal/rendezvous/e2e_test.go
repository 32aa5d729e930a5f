package rendezvous_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/obs"
	"github.com/keymesh/keymesh/internal/rendezvous"
	"github.com/keymesh/keymesh/internal/rzclient"
	"github.com/keymesh/keymesh/internal/wire"
)

// testServer is a real rendezvous on a loopback UDP socket, with its admin
// handler on a loopback HTTP server.
type testServer struct {
	addr    netip.AddrPort
	id      crypto.PeerID
	ident   *crypto.Identity // the server's key, to open what peers sent it
	metrics string           // URL of /metrics
}

func startServer(t *testing.T) *testServer {
	t.Helper()
	return startServerWith(t, nil)
}

// startServerWith is startServer with mod applied to the config.
func startServerWith(t *testing.T, mod func(*rendezvous.Config)) *testServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	admin := obs.NewAdmin("rendezvous", nil)
	reg := discovery.NewMemory(nil)
	cfg := rendezvous.Config{
		Identity:   id,
		Registry:   reg,
		Cookies:    crypto.NewCookieJar([]byte("0123456789abcdef0123456789abcdef"), nil),
		Relays:     []string{"127.0.0.1:9"},
		Registerer: admin.Registry,
		Instance:   "e2e",
		Workers:    2,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := rendezvous.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	admin.AddHealth("registry", srv.Health)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, conn) }()
	hs := httptest.NewServer(admin.Handler())
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after cancel")
		}
		conn.Close()
		hs.Close()
	})
	return &testServer{addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(), id: srv.ID(), ident: id, metrics: hs.URL + "/metrics"}
}

// testPeer is an rzclient on its own loopback socket, with a read loop that
// hands it every datagram.
type testPeer struct {
	id     *crypto.Identity
	conn   *net.UDPConn
	addr   netip.AddrPort
	client *rzclient.Client
	punch  chan wire.Punch

	mu      sync.Mutex
	sent    [][]byte       // what the client sent, the last 64 datagrams
	natOnly netip.AddrPort // when valid, the read loop drops datagrams from elsewhere
}

// natFrom makes p's read loop model a NAT that lets in only datagrams from
// from, the address p sends to.
func (p *testPeer) natFrom(from netip.AddrPort) {
	p.mu.Lock()
	p.natOnly = from
	p.mu.Unlock()
}

func startPeer(t *testing.T, srv *testServer, serverKey crypto.PeerID, mod func(*rzclient.Config)) *testPeer {
	t.Helper()
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &testPeer{id: id, conn: conn, addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(), punch: make(chan wire.Punch, 16)}
	cfg := rzclient.Config{
		Identity:  id,
		Server:    srv.addr,
		ServerKey: serverKey,
		Send: func(b []byte, to netip.AddrPort) error {
			p.mu.Lock()
			if len(p.sent) == 64 {
				p.sent = p.sent[1:]
			}
			p.sent = append(p.sent, append([]byte(nil), b...))
			p.mu.Unlock()
			_, err := conn.WriteToUDPAddrPort(b, to)
			return err
		},
		Candidates: func() []netip.AddrPort { return []netip.AddrPort{p.addr, netip.MustParseAddrPort("100.64.0.9:4000")} },
		NAT:        func() wire.NAT { return wire.NATNone },
		AllowAny:   true,
		OnPunch:    func(pu wire.Punch) { p.punch <- pu },
		Retransmit: 200 * time.Millisecond,
		MaxBackoff: 400 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	p.client, err = rzclient.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			only := p.natOnly
			p.mu.Unlock()
			if only.IsValid() && from != only {
				continue
			}
			p.client.HandleFrame(buf[:n], from)
		}
	}()
	go func() {
		defer wg.Done()
		if err := p.client.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		conn.Close()
		wg.Wait()
	})
	return p
}

func (p *testPeer) waitRegistered(t *testing.T) rzclient.Status {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st := p.client.Status(); st.Registered {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("peer %s not registered after 5 s: %q", p.id.ID().Short(), p.client.Status().LastError)
	return rzclient.Status{}
}

func (p *testPeer) waitPunch(t *testing.T) wire.Punch {
	t.Helper()
	select {
	case pu := <-p.punch:
		return pu
	case <-time.After(5 * time.Second):
		t.Fatal("no punch within 5 s")
		return wire.Punch{}
	}
}

func TestEndToEnd(t *testing.T) {
	srv := startServer(t)
	a := startPeer(t, srv, srv.id, nil)
	b := startPeer(t, srv, srv.id, func(c *rzclient.Config) {
		c.AllowAny = false
		c.Allowed = []crypto.PeerID{a.id.ID()}
	})
	stA := a.waitRegistered(t)
	b.waitRegistered(t)
	if stA.Reflexive != a.addr || stA.Instance != "e2e" || len(stA.Relays) != 1 || stA.Refresh != 20*time.Second {
		t.Fatalf("A's status = %+v", stA)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, target := range []string{b.id.ID().String(), b.id.ID().OverlayAddr().String()} {
		r, err := a.client.Connect(ctx, target)
		if err != nil {
			t.Fatalf("connect to %s: %v", target, err)
		}
		if !r.Found || r.Peer.ID != b.id.ID() || r.Peer.Reflexive != b.addr || len(r.Peer.Candidates) != 2 || r.Peer.Candidates[0] != b.addr {
			t.Fatalf("connect to %s: reply %+v", target, r)
		}
		pu := b.waitPunch(t)
		if pu.TxID != r.TxID || pu.Start != r.Start || pu.Peer.ID != a.id.ID() || pu.Peer.Reflexive != a.addr ||
			len(pu.Peer.Candidates) != 2 || pu.Peer.NAT != wire.NATNone {
			t.Fatalf("B's punch %+v does not match the reply %+v", pu, r)
		}
	}

	// B's policy admits only A: B connecting to A works, a stranger gets
	// the same answer as for a peer nobody registered.
	if _, err := b.client.ConnectPeer(ctx, a.id.ID()); err != nil {
		t.Fatalf("B to A: %v", err)
	}
	a.waitPunch(t)
	c := startPeer(t, srv, srv.id, nil)
	c.waitRegistered(t)
	if _, err := c.client.ConnectPeer(ctx, b.id.ID()); !errors.Is(err, rzclient.ErrPeerNotFound) {
		t.Fatalf("stranger to B: %v, want ErrPeerNotFound", err)
	}
	nobody, _ := crypto.GenerateIdentity(nil)
	if _, err := a.client.Connect(ctx, nobody.ID().String()); !errors.Is(err, rzclient.ErrPeerNotFound) {
		t.Fatalf("connect to nobody: %v, want ErrPeerNotFound", err)
	}
	if _, err := a.client.Connect(ctx, "not-a-peer"); !errors.Is(err, rzclient.ErrBadTarget) {
		t.Fatalf("bad target: %v", err)
	}
	select {
	case pu := <-b.punch:
		t.Fatalf("B got a punch from %s its policy refuses", pu.Peer.ID.Short())
	default:
	}
}

// A client pinning another key cannot register, says why, and the server
// counts the packets it refused, the replayed and the truncated one too,
// while it keeps serving.
func TestEndToEndRejections(t *testing.T) {
	// The cookie period stands still: a replay that crossed into the next
	// period would carry the previous period's cookie and get a Challenge
	// (counted as no_cookie) before the replay cache saw it.
	frozen := time.Now()
	srv := startServerWith(t, func(c *rendezvous.Config) {
		c.Cookies = crypto.NewCookieJar([]byte("0123456789abcdef0123456789abcdef"), func() time.Time { return frozen })
	})
	wrong, _ := crypto.GenerateIdentity(nil)
	bad := startPeer(t, srv, wrong.ID(), nil)
	a := startPeer(t, srv, srv.id, nil)
	a.waitRegistered(t)

	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(bad.client.Status().LastError, "no answer") {
		if time.Now().After(deadline) {
			t.Fatalf("wrong-key client: LastError %q, want a no-answer error", bad.client.Status().LastError)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := bad.client.Status(); st.Registered {
		t.Fatal("wrong-key client registered")
	}
	t.Logf("wrong-key client says: %s", bad.client.Status().LastError)

	// Replay A's last Register from A's address, and send a truncated frame.
	// (Its last datagram need not be one: on a loaded machine the wait
	// above can outlast its first keepalive.)
	a.mu.Lock()
	last := lastRegister(t, srv.ident, a.id.ID(), a.sent)
	a.mu.Unlock()
	if _, err := a.conn.WriteToUDPAddrPort(last, srv.addr); err != nil {
		t.Fatal(err)
	}
	if _, err := a.conn.WriteToUDPAddrPort(last[:40], srv.addr); err != nil {
		t.Fatal(err)
	}

	want := map[string]float64{"bad_box": 1, "replay": 1, "truncated": 1}
	deadline = time.Now().Add(5 * time.Second)
	for {
		got := rejected(t, srv.metrics)
		ok := true
		for r, n := range want {
			if got[r] < n {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rejected counters %v, want at least %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Still serving.
	b := startPeer(t, srv, srv.id, nil)
	b.waitRegistered(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.client.ConnectPeer(ctx, b.id.ID()); err != nil {
		t.Fatalf("connect after the rejections: %v", err)
	}
	resp, err := http.Get(strings.TrimSuffix(srv.metrics, "/metrics") + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
}

// rejected scrapes /metrics and returns keymesh_rendezvous_rejected_total by
// reason.
func rejected(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]float64{}
	fam := fams["keymesh_rendezvous_rejected_total"]
	if fam == nil {
		t.Fatal("no keymesh_rendezvous_rejected_total in /metrics")
	}
	for _, m := range fam.Metric {
		for _, l := range m.Label {
			if l.GetName() == "reason" {
				out[l.GetValue()] = m.Counter.GetValue()
			}
		}
	}
	for _, name := range []string{"keymesh_rendezvous_registrations_total", "keymesh_rendezvous_registered_peers", "keymesh_rendezvous_connects_total"} {
		if fams[name] == nil {
			t.Fatalf("no %s in /metrics", name)
		}
	}
	return out
}
