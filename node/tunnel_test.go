package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"net"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/pathsock"
	"github.com/keymesh/keymesh/internal/rendezvous"
	"github.com/keymesh/keymesh/internal/streamclient"
	"github.com/keymesh/keymesh/internal/streamrelay"
	"github.com/keymesh/keymesh/internal/wire"
)

// blockedUDP is a socket on a network that drops all UDP: nothing sent
// leaves.
type blockedUDP struct{ *net.UDPConn }

func (b blockedUDP) WriteToUDPAddrPort(p []byte, _ netip.AddrPort) (int, error) { return len(p), nil }

// blockProbes gives a node a probe socket on the same blocked network.
func blockProbes(n *Node) {
	n.fb.listen = func(addr string) (probeConn, error) {
		c, err := listenProbe(addr)
		if err != nil {
			return nil, err
		}
		return blockedUDP{c.(*net.UDPConn)}, nil
	}
}

// TestUDPBlockedUsesStreamRelay starts a node whose UDP goes nowhere: it
// must find that out by itself, move into a TLS tunnel to the stream relay,
// register through it, and carry a session to a UDP peer over the relay.
func TestUDPBlockedUsesStreamRelay(t *testing.T) {
	m := startMesh(t)
	streamURL := startStreamRelay(t)

	b := m.newNode(nil)
	seed := make([]byte, 32)
	rand.Read(seed)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	a, err := newNode(ctx, Config{Seed: seed, Server: m.server, AllowAny: true, StreamRelay: streamURL, UDPTimeout: time.Second, Logger: testLogger(t)},
		func(pc *pathsock.Config) { pc.Conn = blockedUDP{udp} }, blockProbes)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if st := a.Status(); st.Transport != "tcp" || !st.Registered {
		t.Fatalf("status %+v: want registered over tcp", st)
	}
	ln := b.Listen()
	payload := make([]byte, 5<<20)
	rand.Read(payload)
	want := sha256.Sum256(payload)
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		h, _, err := readAndHash(c)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- h
	}()
	c, err := a.Dial(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	c.(*Conn).CloseWrite()
	select {
	case h := <-got:
		if h != hex.EncodeToString(want[:]) {
			t.Fatalf("hash %s, want %x", h, want)
		}
	case <-ctx.Done():
		t.Fatal("transfer through the stream relay did not finish")
	}
	c.Close()
	for _, p := range a.Status().Peers {
		if p.ID == b.ID() && p.Path != "relay" {
			t.Fatalf("path %q from the tunnelled side, want relay", p.Path)
		}
	}
	if p := peerPath(b, &testNode{Node: a}); p != "relay" {
		t.Fatalf("path %q from the UDP side, want relay", p)
	}
	// It kept probing UDP from a socket of its own, and nothing answered:
	// still in the tunnel.
	if st := a.Status(); st.Transport != "tcp" {
		t.Fatalf("transport %q after the transfer with UDP still blocked, want tcp", st.Transport)
	}
	_ = bytes.MinRead
}

// startStreamRelay serves a TLS stream relay on loopback and returns its
// URL.
func startStreamRelay(t *testing.T) string {
	relayID, _ := crypto.GenerateIdentity(nil)
	srv, err := streamrelay.New(streamrelay.Config{PresenceIP: netip.MustParseAddr("127.0.0.1"),
		AllowDestinations: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}) // the rendezvous and the peers are on loopback
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := relayID.Certificate()
	ts := httptest.NewUnstartedServer(srv)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return strings.Replace(ts.URL, "https://", "wss://", 1) + streamclient.Path + "#" + relayID.ID().String()
}

// TestTunnelReturnsToUDP starts a node in the stream tunnel (its first
// socket drops everything) whose UDP probe socket, on the port it had,
// does reach the rendezvous: the first authenticated answer moves the path
// layer back onto that socket, and a stream to a peer that runs across
// the move arrives whole and ends on the direct path.
func TestTunnelReturnsToUDP(t *testing.T) {
	m := startMesh(t)
	streamURL := startStreamRelay(t)
	b := m.newNode(nil)
	seed := make([]byte, 32)
	rand.Read(seed)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	a, err := newNode(ctx, Config{Seed: seed, Server: m.server, AllowAny: true, StreamRelay: streamURL, UDPTimeout: time.Second, Logger: testLogger(t)},
		func(pc *pathsock.Config) { pc.Conn = blockedUDP{udp} })
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if st := a.Status(); st.Transport != "tcp" {
		t.Fatalf("transport %q at start with UDP blocked, want tcp", st.Transport)
	}
	ln := b.Listen()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		h, _, err := readAndHash(c)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- h
	}()
	c, err := a.Dial(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Paced, so that the stream outlasts the return to UDP.
	h := sha256.New()
	chunk := make([]byte, 64<<10)
	returned := false
	for i := 0; i < 200 && ctx.Err() == nil; i++ {
		rand.Read(chunk)
		h.Write(chunk)
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		if !returned && a.Status().Transport == "udp" {
			returned = true
			t.Logf("back on UDP after %d of 200 chunks", i+1)
		}
	}
	c.(*Conn).CloseWrite()
	select {
	case s := <-got:
		if want := hex.EncodeToString(h.Sum(nil)); s != want {
			t.Fatalf("received %s, want %s", s, want)
		}
	case <-ctx.Done():
		t.Fatal("the stream across the return to UDP did not finish")
	}
	if !returned {
		t.Fatal("the node did not return to UDP while the stream ran")
	}
	waitFor(t, 10*time.Second, "direct path after the return to UDP", func() bool {
		return peerPath(&testNode{Node: a}, b) == "direct"
	})
}

// TestUDPProbeOnlyAuthenticAnswers: in the tunnel, what reaches the UDP
// probe socket from the rendezvous' address counts as UDP working only
// when it is a fresh sealed answer from the pinned rendezvous key that
// neither client took before: a frame sealed by another key, a stale one
// and a replay of one the main client (in the tunnel) already took leave
// the node where it is; a fresh answer makes it return.
func TestUDPProbeOnlyAuthenticAnswers(t *testing.T) {
	var server *crypto.Identity
	m := startMeshWith(t, func(rc *rendezvous.Config) { server = rc.Identity })
	streamURL := startStreamRelay(t)
	seed := make([]byte, 32)
	rand.Read(seed)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	a, err := newNode(ctx, Config{Seed: seed, Server: m.server, AllowAny: true, StreamRelay: streamURL, UDPTimeout: time.Second, Logger: testLogger(t)},
		func(pc *pathsock.Config) { pc.Conn = blockedUDP{udp} }, blockProbes)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if st := a.Status(); st.Transport != "tcp" {
		t.Fatalf("transport %q at start with UDP blocked, want tcp", st.Transport)
	}
	answered := func() bool {
		a.fb.mu.Lock()
		defer a.fb.mu.Unlock()
		return a.fb.w.answered
	}
	shared, err := server.SharedKey(a.me)
	if err != nil {
		t.Fatal(err)
	}
	seal := func(id *crypto.Identity, key *[32]byte, at time.Time) []byte {
		return wire.SealFrame(nil, id.ID(), key, wire.Message{Time: at.UnixMilli(), Body: &wire.KeepaliveAck{Instance: "x"}})
	}
	stranger, _ := crypto.GenerateIdentity(nil)
	strangerKey, _ := stranger.SharedKey(a.me)
	taken := seal(server, shared, time.Now())
	a.rz.HandleFrame(taken, a.srv) // the main client, through the tunnel
	for name, b := range map[string][]byte{
		"another key": seal(stranger, strangerKey, time.Now()),
		"stale":       seal(server, shared, time.Now().Add(-time.Hour)),
		"replayed":    taken,
	} {
		a.fb.probe.HandleFrame(b, a.srv)
		if answered() {
			t.Fatalf("a frame from %s counted as UDP working", name)
		}
	}
	// The probe socket passes on only what comes from the rendezvous'
	// address: even a genuine answer from elsewhere is dropped unread.
	a.fb.mu.Lock()
	probeAt := a.fb.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	a.fb.mu.Unlock()
	other, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for range 5 {
		if _, err := other.WriteToUDPAddrPort(seal(server, shared, time.Now()), probeAt); err != nil {
			t.Fatal(err)
		}
	}
	// The reader takes them within its 200 ms read deadline; one more
	// frame through the same socket from the real server cannot come
	// (probes are blocked), so wait on the reader's own clock.
	time.Sleep(500 * time.Millisecond)
	if answered() {
		t.Fatal("an answer from another address than the rendezvous' counted")
	}
	a.fb.probe.HandleFrame(seal(server, shared, time.Now()), a.srv)
	if !answered() {
		t.Fatal("a fresh sealed answer from the rendezvous did not count")
	}
}

// TestSpoofedFloodCannotHoldNodeInTunnel: a stranger floods the rendezvous
// with datagrams from the node's own address (other ports), four times the
// per-source rate, for several give-up periods. The node's UDP works (no
// relay is configured, so only the rendezvous' answers say so): under the
// flood it must be registered over UDP. With a per-source budget spent
// before the cookie proof, the flood silenced the rendezvous for it and
// moved it into the TLS tunnel for as long as the flood lasted.
func TestSpoofedFloodCannotHoldNodeInTunnel(t *testing.T) {
	m := startMeshWith(t, func(c *rendezvous.Config) {
		c.Relays = nil
		c.RateLimit = rendezvous.RateLimit{PerSecond: rendezvous.DefaultRate, Burst: rendezvous.DefaultBurst}
	})
	streamURL := startStreamRelay(t)
	a := m.newNode(func(c *Config) { c.StreamRelay = streamURL; c.UDPTimeout = time.Second })
	if st := a.Status(); st.Transport != "udp" || !st.Registered {
		t.Fatalf("status %+v before the flood: want registered over udp", st)
	}
	server, _, _ := strings.Cut(m.server, "#")
	to := netip.MustParseAddrPort(server)
	evil, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}) // the node's address, another port
	if err != nil {
		t.Fatal(err)
	}
	defer evil.Close()
	junk := append([]byte{wire.TypeRequest}, make([]byte, 120)...)
	// The flood runs at least 4 s, and until the node is registered over
	// UDP again, for 12 s at most. A moment's silence of the rendezvous
	// (a loaded machine: 400 ms unanswered on loopback) may move the node
	// into the tunnel, and it comes back at the first authenticated
	// answer; a flood that starved its requests (the per-source budget
	// charged before the cookie proof) kept it there for good.
	start := time.Now()
	inTunnel := 0
	for tick := time.NewTicker(10 * time.Millisecond); ; <-tick.C {
		for range 4 * rendezvous.DefaultRate / 100 { // 4x the rate
			if _, err := evil.WriteToUDPAddrPort(junk, to); err != nil {
				t.Fatal(err)
			}
		}
		st := a.Status()
		if st.Transport != "udp" {
			inTunnel++
		}
		if time.Since(start) >= 4*time.Second && st.Transport == "udp" && st.Registered {
			break
		}
		if time.Since(start) > 12*time.Second {
			t.Fatalf("status %+v: a spoofed flood kept the node in the TLS tunnel", st)
		}
	}
	if inTunnel > 0 {
		t.Logf("the node was in the tunnel at %d of the 10 ms checks during the flood, and came back under it", inTunnel)
	}
	if st := a.Status(); st.Transport != "udp" || !st.Registered {
		t.Fatalf("status %+v after the flood: want registered over udp", st)
	}
}
