package rendezvous

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/mesh"
	"github.com/keymesh/keymesh/internal/wire"
)

type meshDelivery struct {
	kind    mesh.Kind
	dst     netip.AddrPort
	payload []byte
}

// startMeshNode runs a real mesh node on loopback whose deliveries go to
// the returned channel.
func startMeshNode(t *testing.T, key *mesh.Key, now func() time.Time) (*mesh.Node, chan meshDelivery) {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan meshDelivery, 8)
	n, err := mesh.NewNode(mesh.Config{Key: key, Conn: c, Now: now, Handle: func(k mesh.Kind, d netip.AddrPort, p []byte) {
		got <- meshDelivery{k, d, append([]byte(nil), p...)}
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = n.Serve(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait(); c.Close() })
	return n, got
}

// TestConnectPunchesThroughHome: a Connect for B taken by this instance
// (X) while B registered at instance Y sends no Punch from X's socket: the
// Punch goes to Y over the mesh, addressed to B's reflexive address, and
// Y's handler gets exactly the sealed Punch B can open. A's reply still
// leaves from X. With B homed here, the Punch leaves from here as before.
func TestConnectPunchesThroughHome(t *testing.T) {
	key, err := mesh.NewKey([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	var (
		x    *mesh.Node
		y    <-chan meshDelivery
		yad  netip.AddrPort
		xgot <-chan meshDelivery
	)
	f := newFixture(t, func(c *Config) {
		x, xgot = startMeshNode(t, key, c.Now)
		var yn *mesh.Node
		yn, y = startMeshNode(t, key, c.Now)
		yad = yn.Addr()
		c.Mesh, c.MeshAddr = x, x.Addr()
	})
	a := f.newPeer("203.0.113.5:40000")
	b := f.newPeer("198.51.100.9:50000")
	f.register(a, wire.Register{AllowAny: true})
	f.register(b, wire.Register{AllowAny: true})

	// Homed here: the Punch is one of this instance's replies.
	out := f.exchange(a.addr, f.seal(a, &wire.Connect{Cookie: a.cookie, TxID: 1, Target: b.id.ID()}))
	if len(out) != 2 || out[0].to != b.addr {
		t.Fatalf("B homed here: %d replies, want the Punch to B and the reply to A", len(out))
	}

	// B's record as instance Y wrote it.
	rec, err := f.reg.Get(context.Background(), b.id.ID())
	if err != nil {
		t.Fatal(err)
	}
	if rec.Home != x.Addr() {
		t.Fatalf("registration recorded home %v, want this instance's mesh address %v", rec.Home, x.Addr())
	}
	rec.Home = yad
	if err := f.reg.Put(context.Background(), rec, time.Minute); err != nil {
		t.Fatal(err)
	}
	out = f.exchange(a.addr, f.seal(a, &wire.Connect{Cookie: a.cookie, TxID: 2, Target: b.id.ID()}))
	if len(out) != 1 || out[0].to != a.addr {
		t.Fatalf("B homed on Y: replies %v, want only the reply to A", out)
	}
	if r, ok := f.open(a, out[0].b).Body.(*wire.ConnectReply); !ok || !r.Found || r.TxID != 2 {
		t.Fatalf("A got %+v", r)
	}
	select {
	case d := <-y:
		if d.kind != mesh.KindPunch || d.dst != b.addr {
			t.Fatalf("Y got %v to %v, want a punch to %v", d.kind, d.dst, b.addr)
		}
		if p, ok := f.open(b, d.payload).Body.(*wire.Punch); !ok || p.TxID != 2 || p.Peer.ID != a.id.ID() {
			t.Fatalf("Y's payload is not B's Punch: %+v", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Y got no punch over the mesh")
	}
	select {
	case d := <-xgot:
		t.Fatalf("X delivered %+v to itself", d)
	default:
	}
}

// TestDeliverPunches: the receiving side sends only rendezvous frames.
func TestDeliverPunches(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	h := DeliverPunches(c, newFixture(t, nil).srv.log)
	to := b.LocalAddr().(*net.UDPAddr).AddrPort()
	h(mesh.KindRelayed, to, []byte{0x20, 1}) // wrong kind
	h(mesh.KindPunch, to, []byte{0x01, 1})   // STUN, not a frame
	h(mesh.KindPunch, to, []byte{0x21, 2})
	buf := make([]byte, 16)
	_ = b.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, from, err := b.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "\x21\x02" || from != c.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Fatalf("got %x from %v, want only the frame, from the rendezvous socket", buf[:n], from)
	}
}

// TestConnectPunchesAroundDeadHome: B's home instance Y goes silent (its
// region died; the front door moved B's flow to this instance, X). Once X
// heard nothing from Y for mesh.DeadAfter, the Punch for B leaves from X
// itself instead of vanishing into the mesh; when Y is heard again, the
// Punch goes through Y again.
func TestConnectPunchesAroundDeadHome(t *testing.T) {
	key, err := mesh.NewKey([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	var (
		x, yn *mesh.Node
		y     <-chan meshDelivery
	)
	f := newFixture(t, func(c *Config) {
		x, _ = startMeshNode(t, key, c.Now)
		yn, y = startMeshNode(t, key, c.Now)
		c.Mesh, c.MeshAddr = x, x.Addr()
	})
	a := f.newPeer("203.0.113.5:40000")
	b := f.newPeer("198.51.100.9:50000")
	f.register(a, wire.Register{AllowAny: true})
	f.register(b, wire.Register{AllowAny: true})
	rec, err := f.reg.Get(context.Background(), b.id.ID())
	if err != nil {
		t.Fatal(err)
	}
	rec.Home = yn.Addr()
	if err := f.reg.Put(context.Background(), rec, time.Minute); err != nil {
		t.Fatal(err)
	}
	throughY := func(tx uint64) {
		t.Helper()
		out := f.exchange(a.addr, f.seal(a, &wire.Connect{Cookie: a.cookie, TxID: tx, Target: b.id.ID()}))
		if len(out) != 1 || out[0].to != a.addr {
			t.Fatalf("tx %d, Y alive: replies %v, want only the reply to A", tx, out)
		}
		select {
		case d := <-y:
			if d.kind != mesh.KindPunch || d.dst != b.addr {
				t.Fatalf("Y got %v to %v, want a punch to %v", d.kind, d.dst, b.addr)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("tx %d: Y got no punch over the mesh", tx)
		}
	}
	throughY(1)

	f.clock.Add(mesh.DeadAfter + time.Millisecond)
	out := f.exchange(a.addr, f.seal(a, &wire.Connect{Cookie: a.cookie, TxID: 2, Target: b.id.ID()}))
	if len(out) != 2 || out[0].to != b.addr {
		t.Fatalf("Y silent for DeadAfter: replies %v, want the Punch to B from here and the reply to A", out)
	}
	if p, ok := f.open(b, out[0].b).Body.(*wire.Punch); !ok || p.TxID != 2 {
		t.Fatalf("B's datagram is not its Punch: %+v", p)
	}

	// X's heartbeat makes Y watch X; Y's heartbeat brings Y back.
	x.Beat()
	for deadline := time.Now().Add(10 * time.Second); yn.Stats().Heartbeats < 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Y never got X's heartbeat: %+v", yn.Stats())
		}
	}
	before := x.Stats().Heartbeats
	yn.Beat()
	for deadline := time.Now().Add(10 * time.Second); x.Stats().Heartbeats == before; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("X never got Y's heartbeat: %+v", x.Stats())
		}
	}
	throughY(3)
}
