package relay

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/keymesh/keymesh/internal/mesh"
)

// TestMembersChangeAtRunTime: with Config.Members (a membership registry)
// the relay's tickets name the number it holds now, none while it holds
// none, and a ticket naming another instance goes through the address the
// directory has for it now.
func TestMembersChangeAtRunTime(t *testing.T) {
	key, err := mesh.NewKey([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Keys: mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)}
	// y: a plain numbered relay with its mesh at 127.0.2.40:3490.
	yMesh := netip.MustParseAddrPort("127.0.2.40:3490")
	peers := mesh.Peers{2: yMesh, 1: netip.MustParseAddrPort("127.0.1.40:3490")}
	y := startMeshRelay(t, cfg, "batch", "127.0.2.41", 2, peers, key)
	// x: numbered by a directory that starts empty.
	mc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 1, 40), Port: 3490})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 1, 41)})
	if err != nil {
		t.Fatal(err)
	}
	node, err := mesh.NewNode(mesh.Config{Key: key, Conn: mc, Handle: DeliverRelayed(conn, slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = node.Serve(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait(); mc.Close() })
	dir := &mesh.Directory{}
	xc := cfg
	xc.Mesh, xc.Members = node, dir
	srv, err := New(xc)
	if err != nil {
		t.Fatal(err)
	}
	x := serveOn(t, srv, nil, conn, "batch")

	instance := func(p *peer) uint16 {
		t.Helper()
		tk, err := cfg.Keys.Open(p.bind(t, x.addr).Ticket)
		if err != nil {
			t.Fatal(err)
		}
		return tk.Instance
	}
	c := newPeer(t, "127.0.0.1:0")
	if n := instance(c); n != 0 {
		t.Fatalf("a relay holding no number sealed a ticket naming %d", n)
	}
	dir.Set(1, mesh.Peers{2: yMesh})
	if n := instance(c); n != 1 {
		t.Fatalf("ticket names %d, want 1, the number now held", n)
	}
	dir.Set(3, mesh.Peers{2: yMesh})
	if n := instance(c); n != 3 {
		t.Fatalf("ticket names %d, want 3 after the number changed", n)
	}

	// A packet landing on x for B, homed on y (ticket names 2), leaves
	// from y, found through the directory.
	a, b := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0")
	bb := b.bind(t, y.addr)
	a.send(t, x.addr, relaySend(bb.Ticket, a, "via the directory"))
	if from := expectRelayedFrom(t, b, a, "via the directory"); from != y.addr.AddrPort() {
		t.Fatalf("B got the packet from %v, want its home %v", from, y.addr)
	}
	// Instance 2 gone from the directory: x forwards it itself.
	dir.Set(3, mesh.Peers{})
	a.send(t, x.addr, relaySend(bb.Ticket, a, "from x"))
	if from := expectRelayedFrom(t, b, a, "from x"); from != x.addr.AddrPort() {
		t.Fatalf("B got the packet from %v, want %v: instance 2 left the directory", from, x.addr)
	}
}
