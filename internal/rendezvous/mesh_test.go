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
		select {
		case got <- meshDelivery{k, d, append([]byte(nil), p...)}:
		default: // a test that floods does not read them all; Serve must not block
		}
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
	rec.Sent = f.registerStamp(b) // the Register Y took
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
	rec.Sent = f.registerStamp(b) // the Register Y took
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

// homeOnY registers a and b at the fixture's instance X and rewrites b's
// record as instance Y (mesh address y) wrote it.
func homeOnY(t *testing.T, f *fixture, b *peer, y netip.AddrPort) {
	t.Helper()
	rec, err := f.reg.Get(context.Background(), b.id.ID())
	if err != nil {
		t.Fatal(err)
	}
	rec.Home = y
	rec.Sent = f.registerStamp(b) // the Register Y took
	if err := f.reg.Put(context.Background(), rec, time.Minute); err != nil {
		t.Fatal(err)
	}
}

// TestConnectPunchesSuspectHomeBothWays: B's home instance Y stops
// answering (its process killed; the front door moved B's flow to X). On
// X's clock, up to mesh.SuspectAfter without a heartbeat the Punch for B
// goes through Y only; past it (two heartbeats missed) the same sealed
// Punch goes both through Y and from X, to B's registered address, one
// copy each; past mesh.DeadAfter from X only; once Y is heard again,
// through Y only.
func TestConnectPunchesSuspectHomeBothWays(t *testing.T) {
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
	homeOnY(t, f, b, yn.Addr())

	// connect sends A's Connect and returns the Punches for B: the one
	// Y got over the mesh (nil if none) and the one X sent itself (nil
	// if none). Every other reply must be A's, and exactly one.
	connect := func(tx uint64, wantMesh bool) (viaY, fromX []byte) {
		t.Helper()
		out := f.exchange(a.addr, f.seal(a, &wire.Connect{Cookie: a.cookie, TxID: tx, Target: b.id.ID()}))
		toA := 0
		for _, o := range out {
			switch o.to {
			case b.addr:
				if fromX != nil {
					t.Fatalf("tx %d: X sent B two Punches", tx)
				}
				fromX = o.b
			case a.addr:
				toA++
			default:
				t.Fatalf("tx %d: X sent a datagram to %v, neither A nor B's registered address", tx, o.to)
			}
		}
		if toA != 1 {
			t.Fatalf("tx %d: %d replies to A, want 1", tx, toA)
		}
		if wantMesh {
			select {
			case d := <-y:
				if d.kind != mesh.KindPunch || d.dst != b.addr {
					t.Fatalf("tx %d: Y got %v to %v, want a punch to %v", tx, d.kind, d.dst, b.addr)
				}
				viaY = d.payload
			case <-time.After(10 * time.Second):
				t.Fatalf("tx %d: Y got no punch over the mesh", tx)
			}
		}
		for _, p := range [][]byte{viaY, fromX} {
			if p == nil {
				continue
			}
			if m, ok := f.open(b, p).Body.(*wire.Punch); !ok || m.TxID != tx || m.Peer.ID != a.id.ID() {
				t.Fatalf("tx %d: B's datagram is not its Punch: %+v", tx, m)
			}
		}
		return viaY, fromX
	}
	sent := func() uint64 { return x.Stats().Sent }

	before := sent()
	if _, fromX := connect(1, true); fromX != nil {
		t.Fatal("Y just watched: X sent the Punch itself too")
	}
	f.clock.Add(mesh.SuspectAfter)
	if _, fromX := connect(2, true); fromX != nil {
		t.Fatal("Y silent for exactly SuspectAfter: X sent the Punch itself too")
	}
	f.clock.Add(time.Millisecond)
	viaY, fromX := connect(3, true)
	if fromX == nil {
		t.Fatal("Y suspect: X did not send the Punch itself")
	}
	if string(viaY) != string(fromX) {
		t.Fatal("Y suspect: the two copies differ; B's replay check would not drop the second")
	}
	if got := sent() - before; got != 3 {
		t.Fatalf("X sent %d mesh messages for 3 Connects, want one each", got)
	}

	f.clock.Add(mesh.DeadAfter - mesh.SuspectAfter)
	if _, fromX := connect(4, false); fromX == nil {
		t.Fatal("Y dead: X did not send the Punch itself")
	}
	if got := sent() - before; got != 3 {
		t.Fatalf("Y dead: X still forwarded to it (%d mesh messages)", got)
	}
	select {
	case d := <-y:
		t.Fatalf("Y dead: Y got %+v", d)
	default:
	}

	// X's heartbeat makes Y watch X; Y's heartbeat brings Y back.
	x.Beat()
	for deadline := time.Now().Add(10 * time.Second); yn.Stats().Heartbeats < 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Y never got X's heartbeat: %+v", yn.Stats())
		}
	}
	hb := x.Stats().Heartbeats
	yn.Beat()
	for deadline := time.Now().Add(10 * time.Second); x.Stats().Heartbeats == hb; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("X never got Y's heartbeat: %+v", x.Stats())
		}
	}
	if _, fromX := connect(5, true); fromX != nil {
		t.Fatal("Y heard again: X sent the Punch itself too")
	}
}

// TestSuspectHomePunchFlood is the punch-flood attack while B's home is
// suspect: registered keys Connect to B over and over, and a fresh key
// from a spoofed address tries too. Each Punch the rate limit lets through
// leaves twice at most (once over the mesh, once from here), both to B's
// registered address: the attackers choose no destination, and the
// limit's burst bounds the copies each way.
func TestSuspectHomePunchFlood(t *testing.T) {
	key, err := mesh.NewKey([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	var x, yn *mesh.Node
	f := newFixture(t, func(c *Config) {
		c.RateLimit.PerSecond = -1
		x, _ = startMeshNode(t, key, c.Now)
		yn, _ = startMeshNode(t, key, c.Now)
		c.Mesh, c.MeshAddr = x, x.Addr()
	})
	victim := f.newPeer("198.51.100.9:50000")
	f.register(victim, wire.Register{AllowAny: true})
	homeOnY(t, f, victim, yn.Addr())
	bots := make([]*peer, 16)
	for i := range bots {
		bots[i] = f.newPeer(netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + i)}), 7000).String())
		f.register(bots[i], wire.Register{AllowAny: true})
	}
	if !x.Alive(yn.Addr()) { // X watches Y from now
		t.Fatal("Y not alive when first watched")
	}
	f.clock.Add(mesh.SuspectAfter + time.Millisecond)
	if !x.Suspect(yn.Addr()) {
		t.Fatal("Y not suspect after SuspectAfter")
	}

	before := x.Stats().Sent
	direct := 0
	const flood = 400
	for i := range flood {
		p := bots[i%len(bots)]
		out := f.exchange(p.addr, f.seal(p, &wire.Connect{Cookie: p.cookie, TxID: uint64(i), Target: victim.id.ID()}))
		for _, o := range out {
			switch o.to {
			case victim.addr:
				direct++
			case p.addr:
			default:
				t.Fatalf("connect %d: a datagram to %v, neither the requester nor the target", i, o.to)
			}
		}
	}
	viaMesh := int(x.Stats().Sent - before)
	if direct > DefaultPunchBurst || viaMesh > DefaultPunchBurst || direct != viaMesh || direct == 0 {
		t.Fatalf("%d connects: %d Punches from here, %d over the mesh; want the same number each way, at most the burst %d",
			flood, direct, viaMesh, DefaultPunchBurst)
	}

	// A fresh key from a spoofed address: no Punch either way.
	stranger := f.newPeer("203.0.113.200:9999")
	for tx := range uint64(4) {
		out := f.exchange(stranger.addr, f.seal(stranger, &wire.Connect{Cookie: stranger.cookie, TxID: tx, Target: victim.id.ID()}))
		for _, o := range out {
			if o.to != stranger.addr {
				t.Fatalf("stranger's connect: a datagram to %v", o.to)
			}
		}
	}
	if got := int(x.Stats().Sent-before) - viaMesh; got != 0 {
		t.Fatalf("stranger's connects: %d mesh messages", got)
	}
}
