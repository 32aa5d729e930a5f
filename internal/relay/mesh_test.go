package relay

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/mesh"
	"github.com/keymesh/keymesh/internal/wire"
)

// meshRelay is a relay instance with its mesh node, each on its own
// loopback address so that its sends are told apart by source address.
type meshRelay struct {
	*testRelay
	node *mesh.Node
}

func startMeshRelay(t *testing.T, keys Config, mode, ip string, instance uint16, peers mesh.Peers, key *mesh.Key) *meshRelay {
	t.Helper()
	return startMeshRelayTB(t, keys, mode, ip, instance, peers, key)
}

func startMeshRelayTB(t testing.TB, keys Config, mode, ip string, instance uint16, peers mesh.Peers, key *mesh.Key) *meshRelay {
	t.Helper()
	return startMeshRelayClock(t, keys, mode, ip, instance, peers, key, nil)
}

// startMeshRelayClock is startMeshRelay whose mesh node runs on clock now
// (nil: time.Now) and watches the other peers (it sends no heartbeats by
// itself: the test calls Beat).
func startMeshRelayClock(t testing.TB, keys Config, mode, ip string, instance uint16, peers mesh.Peers, key *mesh.Key, now func() time.Time) *meshRelay {
	t.Helper()
	var others []netip.AddrPort
	for id, a := range peers {
		if id != instance {
			others = append(others, a)
		}
	}
	mc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(peers[instance].String())))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	node, err := mesh.NewNode(mesh.Config{Key: key, Conn: mc, Allow: peers.Addrs(), Now: now, Peers: others, Handle: DeliverRelayed(conn, slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = node.Serve(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait(); mc.Close() })
	cfg := keys
	cfg.Instance, cfg.Mesh, cfg.MeshPeers = instance, node, peers
	if mode == "single" {
		cfg.Batch = 1
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &meshRelay{testRelay: serveOn(t, srv, nil, conn, mode), node: node}
}

// TestForwardLeavesFromHome: B bound to relay instance 2, so its ticket
// names instance 2. A's packets for B land on instance 1 (as a front door
// may send A's flow there); they reach B from instance 2's address, the
// one B's NAT accepts, through one mesh hop. A packet whose ticket names no
// instance, or an unknown one, is forwarded from where it landed.
func TestForwardLeavesFromHome(t *testing.T) {
	key, err := mesh.NewKey([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	for i, mode := range serveModes {
		t.Run(mode, func(t *testing.T) {
			p := byte(10 * (i + 1))
			peers := mesh.Peers{
				1: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 1, p}), 3490),
				2: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 2, p}), 3490),
			}
			cfg := Config{Keys: mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)}
			x := startMeshRelay(t, cfg, mode, "127.0.1.1", 1, peers, key)
			y := startMeshRelay(t, cfg, mode, "127.0.2.1", 2, peers, key)
			a, b := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0")

			bb := b.bind(t, y.addr)
			tk, err := cfg.Keys.Open(bb.Ticket)
			if err != nil || tk.Instance != 2 {
				t.Fatalf("ticket from instance 2 names instance %d (%v)", tk.Instance, err)
			}
			a.send(t, x.addr, relaySend(bb.Ticket, a, "via home"))
			from := expectRelayedFrom(t, b, a, "via home")
			if from != y.addr.AddrPort() {
				t.Fatalf("B got the packet from %v, want its home relay %v (not %v, where A's packet landed)", from, y.addr, x.addr)
			}
			// The mesh counts a send once the kernel took it, which may be
			// after B has the packet.
			for deadline := time.Now().Add(5 * time.Second); x.node.Stats().Sent != 1; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("instance 1 mesh stats %+v, want one message sent", x.node.Stats())
				}
			}

			// A ticket from a relay with no instance number: forwarded
			// from where it landed, as before.
			plain := cfg.Keys.Seal(nil, crypto.Ticket{Addr: tk.Addr, ID: tk.ID, Expiry: tk.Expiry})
			a.send(t, x.addr, relaySend(plain, a, "no instance"))
			if from := expectRelayedFrom(t, b, a, "no instance"); from != x.addr.AddrPort() {
				t.Fatalf("got it from %v, want %v", from, x.addr)
			}
			unknown := cfg.Keys.Seal(nil, crypto.Ticket{Addr: tk.Addr, ID: tk.ID, Expiry: tk.Expiry, Instance: 9})
			a.send(t, x.addr, relaySend(unknown, a, "unknown instance"))
			if from := expectRelayedFrom(t, b, a, "unknown instance"); from != x.addr.AddrPort() {
				t.Fatalf("got it from %v, want %v", from, x.addr)
			}
		})
	}
}

// expectRelayedFrom is expectRelayed that also returns the sender address.
func expectRelayedFrom(t *testing.T, p *peer, from *peer, payload string) netip.AddrPort {
	t.Helper()
	buf := make([]byte, 2048)
	_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer p.conn.SetReadDeadline(time.Time{})
	n, src, err := p.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no Relayed frame carrying %q arrived: %v", payload, err)
	}
	tag, pl, err := wire.ParseData(buf[:n])
	if err != nil || buf[0] != wire.TypeRelayed || tag != from.id.ID().Tag() || string(pl) != payload {
		t.Fatalf("got %x (%v), want a Relayed frame carrying %q", buf[:n], err, payload)
	}
	return src
}

// BenchmarkForwardViaHome measures what the mesh adds to a relayed packet
// on loopback: "direct" is A's packet forwarded by the relay it reached
// (the ticket names that relay), "via-home" the same packet landing on
// instance 1 and leaving from instance 2 after one mesh hop. Each op is one
// 1200-byte packet from A's socket until B's socket has it.
func BenchmarkForwardViaHome(b *testing.B) {
	key, err := mesh.NewKey([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		b.Fatal(err)
	}
	peers := mesh.Peers{
		1: netip.MustParseAddrPort("127.0.3.1:3491"),
		2: netip.MustParseAddrPort("127.0.4.1:3491"),
	}
	cfg := Config{Keys: mustKeys(b, 1, map[byte][]byte{1: testKey(1)}, nil), RateLimit: RateLimit{Disabled: true}}
	x := startMeshRelayTB(b, cfg, "batch", "127.0.3.1", 1, peers, key)
	y := startMeshRelayTB(b, cfg, "batch", "127.0.4.1", 2, peers, key)
	a, p := newPeer(b, "127.0.0.1:0"), newPeer(b, "127.0.0.1:0")
	bind := p.bind(b, y.addr)
	payload := string(make([]byte, 1200))
	buf := make([]byte, 2048)
	run := func(b *testing.B, to *net.UDPAddr) {
		frame := relaySend(bind.Ticket, a, payload)
		b.SetBytes(int64(len(payload)))
		for b.Loop() {
			if _, err := a.conn.WriteTo(frame, to); err != nil {
				b.Fatal(err)
			}
			_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := p.conn.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, y.addr) })
	b.Run("via-home", func(b *testing.B) { run(b, x.addr) })
}

// TestForwardSkipsDeadHome: the region of B's home relay (instance 2) dies
// and the front door moves B's flow to instance 1. Once instance 1 heard
// nothing from instance 2 for mesh.DeadAfter, A's packets for B's old
// ticket leave from instance 1 itself instead of vanishing into the mesh;
// when instance 2 is heard again they go through it again.
func TestForwardSkipsDeadHome(t *testing.T) {
	key, err := mesh.NewKey([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	peers := mesh.Peers{
		1: netip.MustParseAddrPort("127.0.1.90:3490"),
		2: netip.MustParseAddrPort("127.0.2.90:3490"),
	}
	cfg := Config{Keys: mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)}
	x := startMeshRelayClock(t, cfg, serveModes[0], "127.0.1.91", 1, peers, key, now)
	y := startMeshRelayClock(t, cfg, serveModes[0], "127.0.2.91", 2, peers, key, now)
	a, b := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0")
	bb := b.bind(t, y.addr)

	a.send(t, x.addr, relaySend(bb.Ticket, a, "home alive"))
	if from := expectRelayedFrom(t, b, a, "home alive"); from != y.addr.AddrPort() {
		t.Fatalf("home alive: B got it from %v, want the home %v", from, y.addr)
	}
	clock.Add(int64(mesh.DeadAfter + time.Millisecond))
	a.send(t, x.addr, relaySend(bb.Ticket, a, "home dead"))
	if from := expectRelayedFrom(t, b, a, "home dead"); from != x.addr.AddrPort() {
		t.Fatalf("home silent for DeadAfter: B got it from %v, want %v (where it landed)", from, x.addr)
	}
	before := x.node.Stats().Heartbeats
	y.node.Beat()
	for deadline := time.Now().Add(5 * time.Second); x.node.Stats().Heartbeats == before; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("instance 1 never got instance 2's heartbeat: %+v", x.node.Stats())
		}
	}
	a.send(t, x.addr, relaySend(bb.Ticket, a, "home back"))
	if from := expectRelayedFrom(t, b, a, "home back"); from != y.addr.AddrPort() {
		t.Fatalf("home heard again: B got it from %v, want the home %v", from, y.addr)
	}
}

// TestForwardSuspectHomeBothWays: B's home relay (instance 2) missed its
// heartbeats (mesh.SuspectAfter) but is not given up yet (mesh.DeadAfter).
// A's packet for B's ticket then goes both through the home and from
// instance 1 itself, so that B gets it from wherever the front door moved
// its flow well before the home is declared dead.
func TestForwardSuspectHomeBothWays(t *testing.T) {
	key, err := mesh.NewKey([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	peers := mesh.Peers{
		1: netip.MustParseAddrPort("127.0.1.92:3490"),
		2: netip.MustParseAddrPort("127.0.2.92:3490"),
	}
	cfg := Config{Keys: mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)}
	x := startMeshRelayClock(t, cfg, serveModes[0], "127.0.1.93", 1, peers, key, now)
	y := startMeshRelayClock(t, cfg, serveModes[0], "127.0.2.93", 2, peers, key, now)
	a, b := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0")
	bb := b.bind(t, y.addr)

	clock.Add(int64(mesh.SuspectAfter + time.Millisecond))
	a.send(t, x.addr, relaySend(bb.Ticket, a, "home suspect"))
	got := map[netip.AddrPort]bool{}
	got[expectRelayedFrom(t, b, a, "home suspect")] = true
	got[expectRelayedFrom(t, b, a, "home suspect")] = true
	if !got[x.addr.AddrPort()] || !got[y.addr.AddrPort()] {
		t.Fatalf("suspect home: B got the packet from %v, want from both %v and the home %v", got, x.addr, y.addr)
	}
	// Two copies at most: one frame never buys more (a ticket holder's
	// amplification stays at 2 while a home is suspect, and each copy pays
	// the pair rate: TestSuspectHomeCopiesPayThePairRate).
	_ = b.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, src, err := b.conn.ReadFromUDPAddrPort(make([]byte, 2048)); err == nil {
		t.Fatalf("a third copy (%d bytes from %v) of one frame", n, src)
	}
}

// TestSuspectHomeCopiesPayThePairRate: a home made to look suspect (for
// instance by flooding the path between regions until its heartbeats are
// lost; a spoofed flood no longer does it: TestSpoofedFloodKeepsVictimAlive
// in internal/mesh) must not turn the
// relay into a duplicator. Each copy that reaches B, through the home or
// from here, takes a token of A's rate towards B: B never gets more
// datagrams than A's bucket holds, however many frames A sends.
func TestSuspectHomeCopiesPayThePairRate(t *testing.T) {
	key, err := mesh.NewKey([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	peers := mesh.Peers{
		1: netip.MustParseAddrPort("127.0.1.94:3490"),
		2: netip.MustParseAddrPort("127.0.2.94:3490"),
	}
	const burst = 4
	cfg := Config{
		Keys:      mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil),
		RateLimit: RateLimit{Rate: 1e-6, Burst: burst},
	}
	x := startMeshRelayClock(t, cfg, serveModes[0], "127.0.1.95", 1, peers, key, now)
	y := startMeshRelayClock(t, cfg, serveModes[0], "127.0.2.95", 2, peers, key, now)
	a, b := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0")
	bb := b.bind(t, y.addr)

	clock.Add(int64(mesh.SuspectAfter + time.Millisecond))
	for i := range 2 * burst {
		a.send(t, x.addr, relaySend(bb.Ticket, a, fmt.Sprintf("frame %d", i)))
	}
	got := 0
	buf := make([]byte, 2048)
	for {
		_ = b.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, _, err := b.conn.ReadFromUDPAddrPort(buf); err != nil {
			break
		}
		got++
	}
	if got != burst {
		t.Fatalf("B got %d datagrams for A's %d frames through a suspect home, want %d (A's burst towards B)", got, 2*burst, burst)
	}
}
