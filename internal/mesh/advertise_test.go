package mesh

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// readOne reads one datagram from c.
func readOne(t *testing.T, c *net.UDPConn) []byte {
	t.Helper()
	buf := make([]byte, MaxMessage)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	k, _, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:k]
}

// TestAdvertisedHeartbeat: a node bound to a private address names its
// advertised address in its heartbeats. Where a 1:1 NAT gives its
// datagrams that source (played here by a socket at the advertised
// address that resends them), the heartbeat counts; the same node's
// heartbeat arriving from its private address does not: a heartbeat
// still counts only from the address it names.
func TestAdvertisedHeartbeat(t *testing.T) {
	key := mustKey(t, secret)
	clk := newFakeClock()
	nat := listen(t, "127.0.0.5:0") // the public address the cloud maps onto a's private one
	pub := nat.LocalAddr().(*net.UDPAddr).AddrPort()
	b := startNode(t, Config{Key: key, Conn: listen(t, "127.0.0.1:0"), Now: clk.Now})
	a := startNode(t, Config{Key: key, Conn: listen(t, "127.0.0.1:0"), Now: clk.Now, Advertise: pub,
		Peers: []netip.AddrPort{pub}})
	if a.Self() != pub || a.Addr() == pub {
		t.Fatalf("Self %v, Addr %v: want Self the advertised %v", a.Self(), a.Addr(), pub)
	}
	if _, err := NewNode(Config{Key: key, Conn: listen(t, "127.0.0.1:0"), Advertise: netip.MustParseAddrPort("0.0.0.0:1")}); err == nil {
		t.Fatal("an unspecified advertised address was taken")
	}

	// a's heartbeat (to the address it watches: a's own public one is
	// skipped, so watch through b) as b's NAT-facing side sees it.
	a.SetPeers([]netip.AddrPort{nat.LocalAddr().(*net.UDPAddr).AddrPort()})
	a.Beat() // to pub itself: skipped, it is a's own address
	_ = nat.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if k, _, err := nat.ReadFromUDPAddrPort(make([]byte, MaxMessage)); err == nil {
		t.Fatalf("a sent %d bytes to its own advertised address", k)
	}
	trap := listen(t, "127.0.0.6:0")
	a.SetPeers([]netip.AddrPort{trap.LocalAddr().(*net.UDPAddr).AddrPort()})
	a.Beat()
	hb := readOne(t, trap)
	m, err := Parse(hb)
	if err != nil || m.Kind != KindHeartbeat || m.Dst != pub {
		t.Fatalf("heartbeat %+v (%v): want one naming the advertised %v", m, err, pub)
	}
	// Through the NAT: from pub. b counts it.
	if _, err := nat.WriteToUDPAddrPort(hb, b.Addr()); err != nil {
		t.Fatal(err)
	}
	waitHeartbeats(t, b.Node, 1)
	// Without the NAT: the next heartbeat straight from a's private
	// address. b refuses it.
	a.SetPeers([]netip.AddrPort{b.Addr()})
	a.Beat()
	s := waitStats(t, b.Node, 2)
	if s.Dropped[DropHeartbeatAddr] != 1 || s.Heartbeats != 1 {
		t.Fatalf("stats %+v: want the heartbeat from the private address dropped", s)
	}
	clk.Add(DeadAfter / 2)
	if !b.Alive(pub) {
		t.Fatal("b does not count a, heard at its advertised address, as alive")
	}
}

// TestSetAllow: a node without a source list accepts any source; SetAllow
// turns the list on with Config.Allow kept, and replaces what it added
// before.
func TestSetAllow(t *testing.T) {
	key := mustKey(t, secret)
	dst := netip.MustParseAddrPort("203.0.113.9:9")
	x, y := listen(t, "127.0.0.2:0"), listen(t, "127.0.0.3:0")
	xn, _ := NewNode(Config{Key: key, Conn: x})
	yn, _ := NewNode(Config{Key: key, Conn: y})
	c := listen(t, "127.0.0.4:0")
	cn, _ := NewNode(Config{Key: key, Conn: c})
	n := startNode(t, Config{Key: key, Conn: listen(t, "127.0.0.1:0"), Allow: []netip.Addr{netip.MustParseAddr("127.0.0.4")}})
	n.allow.Store(nil) // as a node built without a list
	n2 := startNode(t, Config{Key: key, Conn: listen(t, "127.0.0.1:0")})
	send := func(from *Node, to *testNode) {
		if err := from.Forward(to.Addr(), KindPunch, dst, []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	send(xn, n2)
	waitStats(t, n2.Node, 1)
	n2.SetAllow([]netip.Addr{netip.MustParseAddr("127.0.0.2")})
	send(xn, n2)
	send(yn, n2)
	s := waitStats(t, n2.Node, 3)
	if s.Accepted != 2 || s.Dropped[DropStranger] != 1 {
		t.Fatalf("stats %+v: want x accepted twice and y dropped as a stranger", s)
	}
	n2.SetAllow([]netip.Addr{netip.MustParseAddr("127.0.0.3")})
	send(xn, n2)
	send(yn, n2)
	s = waitStats(t, n2.Node, 5)
	if s.Accepted != 3 || s.Dropped[DropStranger] != 2 {
		t.Fatalf("stats %+v: after the list changed want y accepted and x dropped", s)
	}
	// Config.Allow stays through SetAllow.
	n.SetAllow([]netip.Addr{netip.MustParseAddr("127.0.0.2")})
	send(cn, n)
	send(xn, n)
	send(yn, n)
	s = waitStats(t, n.Node, 3)
	if s.Accepted != 2 || s.Dropped[DropStranger] != 1 {
		t.Fatalf("stats %+v: want the configured and the added source accepted, y dropped", s)
	}
}

// TestSetPeers: the peers set at run time get heartbeats and stay
// watched; a peer dropped from the set is watched like any other and
// forgotten once neither heard nor asked about.
func TestSetPeers(t *testing.T) {
	key := mustKey(t, secret)
	clk := newFakeClock()
	p1, p2 := listen(t, "127.0.0.2:0"), listen(t, "127.0.0.3:0")
	a1, a2 := p1.LocalAddr().(*net.UDPAddr).AddrPort(), p2.LocalAddr().(*net.UDPAddr).AddrPort()
	n := startNode(t, Config{Key: key, Conn: listen(t, "127.0.0.1:0"), Now: clk.Now})
	n.SetPeers([]netip.AddrPort{a1})
	n.Beat()
	readOne(t, p1)
	n.SetPeers([]netip.AddrPort{a2})
	n.Beat()
	readOne(t, p2)
	readOne(t, p1) // still watched, for now
	clk.Add(forgetAfter + time.Second)
	n.Beat()
	readOne(t, p2)
	_ = p1.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, _, err := p1.ReadFromUDPAddrPort(make([]byte, MaxMessage)); err == nil {
		t.Fatal("a peer dropped from the set still gets heartbeats after forgetAfter")
	}
	if got := len(n.live.targets(nil, clk.Now().UnixNano())); got != 1 {
		t.Fatalf("%d peers watched, want 1", got)
	}
}
