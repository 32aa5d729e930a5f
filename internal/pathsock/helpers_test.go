package pathsock

import (
	"context"
	"crypto/rand"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/relay"
	"github.com/keymesh/keymesh/internal/wire"

	"github.com/keymesh/keymesh/internal/testutil/wait"
)

// testRelay is a real relay server on a loopback socket.
type testRelay struct {
	addr   netip.AddrPort
	keys   *crypto.TicketKeys
	conn   *net.UDPConn
	cancel context.CancelFunc
	done   chan struct{}
}

func newTicketKeys(t *testing.T) *crypto.TicketKeys {
	t.Helper()
	k := make([]byte, 32)
	rand.Read(k)
	tk, err := crypto.NewTicketKeys(1, map[byte][]byte{1: k}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// startRelay serves a relay at addr ("127.0.0.1:0" for a new port).
func startRelay(t *testing.T, keys *crypto.TicketKeys, addr string) *testRelay {
	t.Helper()
	srv, err := relay.New(relay.Config{Keys: keys, RateLimit: relay.RateLimit{Disabled: true}})
	if err != nil {
		t.Fatal(err)
	}
	ua, _ := net.ResolveUDPAddr("udp", addr)
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &testRelay{addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(), keys: keys, conn: conn, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		srv.Serve(ctx, conn)
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *testRelay) stop() {
	r.cancel()
	<-r.done
	r.conn.Close()
}

func newIdentity(t testing.TB) *crypto.Identity {
	t.Helper()
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type testSock struct {
	*Sock
	cut atomic.Bool // cuts the direct path (DropDirect)
}

func newTestSock(t *testing.T, mod func(*Config)) *testSock {
	t.Helper()
	ts := &testSock{}
	cfg := Config{
		Identity:   newIdentity(t),
		ListenAddr: "127.0.0.1:0",
		Interfaces: func() ([]netip.Addr, error) { return nil, nil },
		DropDirect: func(netip.AddrPort) bool { return ts.cut.Load() },
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts.Sock = s
	t.Cleanup(func() { s.Close() })
	return ts
}

// waitFor is wait.For.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return wait.For(t, d, what, cond)
}

// info is a peer's PeerInfo as the rendezvous would hand it out: its
// socket address as the reflexive address.
func info(s *testSock) wire.PeerInfo {
	i := s.Info()
	i.Reflexive = s.LocalAddrPort()
	return i
}

// pair makes two socks bound to one relay and introduces them to each
// other, as a Connect would.
func pair(t *testing.T, r *testRelay, modA, modB func(*Config)) (a, b *testSock) {
	t.Helper()
	a, b = newTestSock(t, modA), newTestSock(t, modB)
	for _, s := range []*testSock{a, b} {
		s.SetRelays([]string{r.addr.String()})
	}
	waitFor(t, 3*time.Second, "relay tickets", func() bool { return len(a.Tickets()) > 0 && len(b.Tickets()) > 0 })
	start := time.Now().Add(50 * time.Millisecond)
	if err := a.AddPeer(info(b), start); err != nil {
		t.Fatal(err)
	}
	if err := b.AddPeer(info(a), start); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func path(s *testSock, peer *testSock) string {
	st, ok := s.Peer(peer.ID())
	if !ok {
		return "unknown"
	}
	return st.Path
}

// exchange sends one datagram from a to b through the PacketConn interface
// and checks it arrives from a's virtual address.
func exchange(t *testing.T, a, b *testSock, msg string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	b.SetReadDeadline(deadline)
	defer b.SetReadDeadline(time.Time{})
	buf := make([]byte, 2048)
	// Resend until it arrives (UDP), skipping stale datagrams.
	for time.Now().Before(deadline) {
		if _, err := a.WriteTo([]byte(msg), VirtualAddr(b.ID())); err != nil {
			t.Fatal(err)
		}
		b.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, from, err := b.ReadFrom(buf)
		if err != nil {
			continue
		}
		if string(buf[:n]) != msg {
			continue
		}
		if from.String() != VirtualAddr(a.ID()).String() {
			t.Fatalf("from %v, want %v", from, VirtualAddr(a.ID()))
		}
		return
	}
	t.Fatalf("%q did not arrive", msg)
}
