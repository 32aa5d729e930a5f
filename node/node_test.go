package node

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/policy"
)

func tctx(t *testing.T, d time.Duration) context.Context { return tctxTB(t, d) }

func tctxTB(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// echoOnce accepts one stream and echoes it.
func echoOnce(t *testing.T, n *testNode) {
	go func() {
		c, err := n.Listen().Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
}

func TestDialByIDAndOverlayGoesDirect(t *testing.T) {
	m := startMesh(t)
	a, b := m.newNode(nil), m.newNode(nil)
	for _, target := range []string{b.ID(), b.OverlayAddr().String()} {
		echoOnce(t, b)
		c, err := a.Dial(tctx(t, 10*time.Second), target)
		if err != nil {
			t.Fatalf("dial %s: %v", target, err)
		}
		msg := "hello " + target
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		c.(*Conn).CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != msg {
			t.Fatalf("echo: %q, %v", got, err)
		}
		c.Close()
	}
	waitFor(t, 5*time.Second, "direct path", func() bool { return peerPath(a, b) == "direct" && peerPath(b, a) == "direct" })
	res, err := a.Ping(tctx(t, 3*time.Second), b.ID())
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != "direct" || res.RTT <= 0 || res.Remote.Port() == 0 {
		t.Fatalf("ping %+v", res)
	}
	st := a.Status()
	if !st.Registered || st.Relay == "" || st.Reflexive == "" || len(st.Peers) != 1 || st.Peers[0].Remote == "" {
		t.Fatalf("status %+v", st)
	}
	// One session, reused by both dials.
	a.mu.Lock()
	nconns := len(a.conns)
	a.mu.Unlock()
	if nconns != 1 {
		t.Fatalf("%d sessions, want 1", nconns)
	}
}

func TestPortsAndRefusals(t *testing.T) {
	m := startMesh(t)
	a := m.newNode(nil)
	b := m.newNode(func(c *Config) { c.AllowAny = false; c.Allow = []string{a.ID()} })
	l, err := b.ListenPort(7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ListenPort(7); !errors.Is(err, ErrPortInUse) {
		t.Fatalf("second listener on a port: %v", err)
	}
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("port seven"))
		c.Close()
	}()
	c, err := a.DialPort(tctx(t, 10*time.Second), b.ID(), 7)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(c)
	if string(got) != "port seven" {
		t.Fatalf("got %q", got)
	}
	// No listener on port 8: the stream is reset.
	c, err = a.DialPort(tctx(t, 10*time.Second), b.ID(), 8)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("read from a port without listener: %v", err)
	}
	// b allows only a: c is refused, with a clear reason.
	c3 := m.newNode(nil)
	_, err = c3.Dial(tctx(t, 10*time.Second), b.ID())
	if !errors.Is(err, ErrPeerNotFound) || !strings.Contains(err.Error(), "--allow "+c3.ID()) {
		t.Fatalf("dial by a peer b does not allow: %v", err)
	}
	// Unknown peer.
	_, err = a.Dial(tctx(t, 10*time.Second), m.newNode(nil).OverlayAddr().String()+"x")
	if err == nil {
		t.Fatal("bad target accepted")
	}
}

func TestTLSRefusalIsClear(t *testing.T) {
	// The rendezvous applies b's policy; the TLS check behind it is the
	// last line. Make the policies disagree: b registers AllowAny but its
	// session check allows nobody.
	m := startMesh(t)
	a := m.newNode(nil)
	b := m.newNode(nil)
	b.policy = policy.New(policy.Config{})
	_, err := a.Dial(tctx(t, 10*time.Second), b.ID())
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "--allow "+a.ID()) {
		t.Fatalf("dial refused by TLS: %v", err)
	}
}

func TestNewFailsClearly(t *testing.T) {
	if _, err := New(context.Background(), Config{Server: "127.0.0.1:1#x"}); !errors.Is(err, ErrNoKey) {
		t.Fatalf("no key: %v", err)
	}
	seed := make([]byte, 32)
	if _, err := New(context.Background(), Config{Seed: seed, Server: "127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "host:port#") {
		t.Fatalf("bad server: %v", err)
	}
	// A server that never answers.
	m := startMesh(t)
	other, _ := crypto.GenerateIdentity(nil)
	bad := m.server[:strings.IndexByte(m.server, '#')+1] + other.ID().String()
	_, err := New(tctx(t, 1500*time.Millisecond), Config{Seed: seed, Server: bad, ListenAddr: "127.0.0.1:0"})
	if !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("unanswered registration: %v", err)
	}
}

func TestPingFirstContactAndSelf(t *testing.T) {
	m := startMesh(t)
	noDirect := func(c *Config) { c.NoDirect = true }
	a, b := m.newNode(noDirect), m.newNode(noDirect)
	// No session yet: Ping introduces the peers itself.
	res, err := a.Ping(tctx(t, 5*time.Second), b.OverlayAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != "relay" || res.Remote.String() != m.relayAt || res.Peer != b.ID() || res.RTT <= 0 {
		t.Fatalf("ping %+v, want relay via %s", res, m.relayAt)
	}
	if _, err := a.Dial(tctx(t, 5*time.Second), a.ID()); err == nil || !strings.Contains(err.Error(), "itself") {
		t.Fatalf("dial self: %v", err)
	}
}

func TestSTUNOverTheNodeSocket(t *testing.T) {
	m := startMesh(t)
	a := m.newNode(nil)
	got, err := a.STUN(tctx(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got != a.sock.LocalAddrPort() {
		t.Fatalf("STUN says %s, the socket is %s", got, a.sock.LocalAddrPort())
	}
}

func TestSimultaneousDials(t *testing.T) {
	m := startMesh(t)
	a, b := m.newNode(nil), m.newNode(nil)
	for _, n := range []*testNode{a, b} {
		go func() {
			for {
				c, err := n.Listen().Accept()
				if err != nil {
					return
				}
				go func() { io.Copy(c, c); c.Close() }()
			}
		}()
	}
	errs := make(chan error, 8)
	for i := range 8 {
		from, to := a, b
		if i%2 == 1 {
			from, to = b, a
		}
		go func() {
			c, err := from.Dial(tctx(t, 10*time.Second), to.ID())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.Write([]byte("x"))
			c.(*Conn).CloseWrite()
			got, err := io.ReadAll(c)
			if err == nil && string(got) != "x" {
				err = errors.New("bad echo")
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
