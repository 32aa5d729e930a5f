package peercmd

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/policy"
	"github.com/keymesh/keymesh/internal/testutil/meshtest"
	"github.com/keymesh/keymesh/node"
)

// userspaceOverlay starts n's overlay in userspace mode as `peer up
// --userspace` does, until the test ends, and returns its stack.
func userspaceOverlay(t *testing.T, n *node.Node, o upOptions) *daemon.Config {
	t.Helper()
	o.Userspace = true
	var cfg daemon.Config
	stop, err := startOverlay(context.Background(), slog.New(slog.DiscardHandler), o, n, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return &cfg
}

// The overlay data path obeys the node's --allow rules, ports included: b
// allows a port 80 only, so a's HTTP request to b's overlay address on
// port 80 is answered while its connection to port 81, where b listens too,
// is refused, logged and counted as a tcp refusal, as a stream would be;
// datagrams to b's UDP port 81 are dropped and counted as a udp refusal.
func TestOverlayPolicyRefusesPort(t *testing.T) {
	srv := meshtest.Start(t)
	a := meshtest.Node(t, srv)
	logs := &syncBuffer{}
	seed := make([]byte, 32)
	rand.Read(seed)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := node.New(ctx, node.Config{Seed: seed, Server: srv, ListenAddr: "127.0.0.1:0", NoReports: true,
		Allow: []string{a.ID() + ":80"}, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	as := userspaceOverlay(t, a, upOptions{AllowAny: true}).Overlay
	bs := userspaceOverlay(t, b, upOptions{Allow: []string{a.ID() + ":80"}}).Overlay

	ln, err := bs.ListenTCPAddrPort(netip.AddrPortFrom(b.OverlayAddr(), 80))
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") }))
	defer ln.Close()
	l81, err := bs.ListenTCPAddrPort(netip.AddrPortFrom(b.OverlayAddr(), 81))
	if err != nil {
		t.Fatal(err)
	}
	defer l81.Close()

	to := netip.AddrPortFrom(b.OverlayAddr(), 80)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return as.DialContextTCPAddrPort(ctx, to)
	}}}
	var got string
	for ctx.Err() == nil && got == "" {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+to.String()+"/", nil)
		resp, err := hc.Do(req)
		if err != nil {
			time.Sleep(100 * time.Millisecond) // the session is being set up
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got = string(body)
	}
	if got != "hello" {
		t.Fatalf("GET port 80 = %q (%v)", got, ctx.Err())
	}
	if n := b.Policy().Refused(policy.KindTCP); n != 0 {
		t.Fatalf("%d tcp refusals before the refused flow", n)
	}

	dctx, dcancel := context.WithTimeout(ctx, 3*time.Second)
	defer dcancel()
	if c, err := as.DialContextTCPAddrPort(dctx, netip.AddrPortFrom(b.OverlayAddr(), 81)); err == nil {
		c.Close()
		t.Fatal("connected to port 81, which b's --allow rule does not allow")
	}
	if n := b.Policy().Refused(policy.KindTCP); n != 1 {
		t.Errorf("tcp refusals = %d, want 1 (one flow, however many SYNs)", n)
	}
	if st := bs.Router.Stats(); st.Refused == 0 {
		t.Errorf("the router counted no refused packet: %+v", st)
	}
	if l := logs.String(); !strings.Contains(l, a.ID()) || !strings.Contains(l, fmt.Sprint(81)) {
		t.Errorf("no log line names the refused peer and port:\n%s", l)
	}

	// UDP: the rule names port 80 only (TCP and UDP), so datagrams to b's
	// UDP port 81 are dropped, and their flow counted once as a udp refusal.
	u81, err := bs.ListenUDPAddrPort(netip.AddrPortFrom(b.OverlayAddr(), 81))
	if err != nil {
		t.Fatal(err)
	}
	defer u81.Close()
	uc, err := as.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(b.OverlayAddr(), 81))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	for i := 0; i < 3; i++ {
		if _, err := uc.Write([]byte("refused")); err != nil {
			t.Fatal(err)
		}
	}
	for b.Policy().Refused(policy.KindUDP) == 0 && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	if n := b.Policy().Refused(policy.KindUDP); n != 1 {
		t.Errorf("udp refusals = %d, want 1 (one flow, three datagrams)", n)
	}
	u81.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := u81.ReadFrom(make([]byte, 100)); err == nil {
		t.Errorf("a refused datagram reached b's UDP port 81: %d bytes", n)
	}
}
