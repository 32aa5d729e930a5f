package node

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/pathsock"
	"github.com/keymesh/keymesh/internal/relay"
	"github.com/keymesh/keymesh/internal/rendezvous"

	"github.com/keymesh/keymesh/internal/testutil/wait"
)

// mesh is a real rendezvous server and a real relay on loopback.
type mesh struct {
	t       testing.TB
	server  string // connect string
	relayAt string
	keys    *crypto.TicketKeys
	stopR   func()
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("KEYMESH_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func startMesh(t *testing.T) *mesh { return startMeshTB(t) }

func startMeshTB(t testing.TB) *mesh { return startMeshWith(t, nil) }

// startMeshWith starts a mesh whose rendezvous configuration mod may
// change.
func startMeshWith(t testing.TB, mod func(*rendezvous.Config)) *mesh {
	t.Helper()
	m := &mesh{t: t}
	k := make([]byte, 32)
	rand.Read(k)
	var err error
	m.keys, err = crypto.NewTicketKeys(1, map[byte][]byte{1: k}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.relayAt = m.startRelay("127.0.0.1:0")

	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	rcfg := rendezvous.Config{
		Identity: id,
		Registry: discovery.NewMemory(time.Now),
		Cookies:  crypto.NewCookieJar(secret, time.Now),
		Relays:   []string{m.relayAt},
		Logger:   testLogger(t),
	}
	if mod != nil {
		mod(&rcfg)
	}
	srv, err := rendezvous.New(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ctx, conn)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		conn.Close()
	})
	m.server = fmt.Sprintf("%s#%s", conn.LocalAddr(), id.ID())
	return m
}

// startRelay serves the relay at addr and returns its address.
func (m *mesh) startRelay(addr string) string {
	m.t.Helper()
	srv, err := relay.New(relay.Config{Keys: m.keys, RateLimit: relay.RateLimit{Disabled: true}})
	if err != nil {
		m.t.Fatal(err)
	}
	ua, _ := net.ResolveUDPAddr("udp", addr)
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		m.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ctx, conn)
	}()
	var once atomic.Bool
	m.stopR = func() {
		if once.Swap(true) {
			return
		}
		cancel()
		<-done
		conn.Close()
	}
	m.t.Cleanup(m.stopR)
	return conn.LocalAddr().String()
}

// restartRelay stops the relay and serves it again on the same port with
// the same keys.
func (m *mesh) restartRelay(down time.Duration) {
	m.stopR()
	time.Sleep(down)
	m.startRelay(m.relayAt)
}

type testNode struct {
	*Node
	cut atomic.Bool
}

// newNode starts a node on loopback. Its direct path can be cut with cut.
func (m *mesh) newNode(mod func(*Config)) *testNode {
	m.t.Helper()
	seed := make([]byte, 32)
	rand.Read(seed)
	cfg := Config{Seed: seed, Server: m.server, ListenAddr: "127.0.0.1:0", AllowAny: true, Logger: testLogger(m.t)}
	if mod != nil {
		mod(&cfg)
	}
	tn := &testNode{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := newNode(ctx, cfg, func(pc *pathsock.Config) {
		pc.DropDirect = func(netip.AddrPort) bool { return tn.cut.Load() }
	})
	if err != nil {
		m.t.Fatal(err)
	}
	tn.Node = n
	m.t.Cleanup(func() { n.Close() })
	return tn
}

// waitFor is wait.For.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return wait.For(t, d, what, cond)
}

func peerPath(n *testNode, peer *testNode) string {
	for _, p := range n.Status().Peers {
		if p.ID == peer.ID() {
			return p.Path
		}
	}
	return "unknown"
}

// readAndHash reads c to EOF and returns the hash and count.
func readAndHash(c net.Conn) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, c)
	return hex.EncodeToString(h.Sum(nil)), n, err
}
