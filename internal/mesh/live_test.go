package mesh

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/testclock"
)

// newFakeClock is an injected clock the test moves by hand.
func newFakeClock() *testclock.Clock { return testclock.New(time.Unix(1_800_000_000, 0)) }

// waitHeartbeats waits until n has accepted want heartbeats.
func waitHeartbeats(t *testing.T, n *Node, want uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n.Stats().Heartbeats < want {
		if time.Now().After(deadline) {
			t.Fatalf("accepted %d heartbeats, want %d (stats %+v)", n.Stats().Heartbeats, want, n.Stats())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestAliveFollowsHeartbeats: a configured peer counts as alive when the
// node starts, as down once nothing came from it for DeadAfter, and alive
// again as soon as one of its heartbeats arrives. Heartbeats are not
// handed to Handle.
func TestAliveFollowsHeartbeats(t *testing.T) {
	key := mustKey(t, secret)
	clk := newFakeClock()
	bConn := listen(t, "127.0.0.1:0")
	bAddr := bConn.LocalAddr().(*net.UDPAddr).AddrPort()
	aConn := listen(t, "127.0.0.1:0")
	aAddr := aConn.LocalAddr().(*net.UDPAddr).AddrPort()
	a := startNode(t, Config{Key: key, Conn: aConn, Now: clk.Now, Peers: []netip.AddrPort{bAddr}})
	b := startNode(t, Config{Key: key, Conn: bConn, Now: clk.Now, Peers: []netip.AddrPort{aAddr}})

	if !a.Alive(bAddr) {
		t.Fatal("a peer is down before DeadAfter has passed since the start")
	}
	clk.Add(DeadAfter)
	if !a.Alive(bAddr) {
		t.Fatal("down at exactly DeadAfter")
	}
	clk.Add(time.Millisecond)
	if a.Alive(bAddr) {
		t.Fatal("a peer silent for more than DeadAfter still counts as alive")
	}
	b.Beat()
	waitHeartbeats(t, a.Node, 1)
	if !a.Alive(bAddr) {
		t.Fatal("a heartbeat did not bring the peer back")
	}
	// Beats every HeartbeatInterval keep it alive.
	for i := uint64(2); i < 10; i++ {
		clk.Add(HeartbeatInterval)
		b.Beat()
		waitHeartbeats(t, a.Node, i)
		if !a.Alive(bAddr) {
			t.Fatalf("down after beat %d", i)
		}
	}
	if HeartbeatInterval*4 > DeadAfter {
		t.Fatalf("HeartbeatInterval %v: fewer than 4 beats per DeadAfter %v", HeartbeatInterval, DeadAfter)
	}
	clk.Add(DeadAfter + time.Millisecond)
	if a.Alive(bAddr) {
		t.Fatal("alive again without a heartbeat")
	}
	select {
	case d := <-a.got:
		t.Fatalf("a heartbeat reached Handle: %+v", d)
	default:
	}
}

// TestSuspectBeforeDead: a configured peer that missed two heartbeats
// (SuspectAfter) is suspect while still alive, and its next heartbeat
// clears the suspicion; a peer nobody watches is never suspect.
func TestSuspectBeforeDead(t *testing.T) {
	key := mustKey(t, secret)
	clk := newFakeClock()
	bConn := listen(t, "127.0.0.1:0")
	bAddr := bConn.LocalAddr().(*net.UDPAddr).AddrPort()
	aConn := listen(t, "127.0.0.1:0")
	aAddr := aConn.LocalAddr().(*net.UDPAddr).AddrPort()
	a := startNode(t, Config{Key: key, Conn: aConn, Now: clk.Now, Peers: []netip.AddrPort{bAddr}})
	b := startNode(t, Config{Key: key, Conn: bConn, Now: clk.Now, Peers: []netip.AddrPort{aAddr}})

	if SuspectAfter >= DeadAfter || SuspectAfter < 2*HeartbeatInterval {
		t.Fatalf("SuspectAfter %v: want at least two heartbeats (%v) and less than DeadAfter %v", SuspectAfter, 2*HeartbeatInterval, DeadAfter)
	}
	clk.Add(SuspectAfter)
	if a.Suspect(bAddr) {
		t.Fatal("suspect at exactly SuspectAfter")
	}
	clk.Add(time.Millisecond)
	if !a.Suspect(bAddr) || !a.Alive(bAddr) {
		t.Fatalf("silent for more than SuspectAfter: suspect %v alive %v, want both", a.Suspect(bAddr), a.Alive(bAddr))
	}
	b.Beat()
	waitHeartbeats(t, a.Node, 1)
	if a.Suspect(bAddr) {
		t.Fatal("a heartbeat did not clear the suspicion")
	}
	if a.Suspect(netip.MustParseAddrPort("127.0.0.1:9")) {
		t.Fatal("a peer nobody watches is suspect")
	}
}

// TestAliveLearnsWatchers: a node asked about a peer it was not configured
// with (a rendezvous forwarding to a peer's home) watches it; the peer
// learns the watcher from its heartbeats and beats back, so both stay
// alive while both run.
func TestAliveLearnsWatchers(t *testing.T) {
	key := mustKey(t, secret)
	clk := newFakeClock()
	x := startNode(t, Config{Key: key, Conn: listen(t, "127.0.0.1:0"), Now: clk.Now})
	y := startNode(t, Config{Key: key, Conn: listen(t, "127.0.0.1:0"), Now: clk.Now})
	if !x.Alive(y.Addr()) {
		t.Fatal("a newly watched peer is down")
	}
	x.Beat()
	waitHeartbeats(t, y.Node, 1)
	clk.Add(DeadAfter + time.Millisecond)
	if x.Alive(y.Addr()) {
		t.Fatal("y never answered but is alive")
	}
	y.Beat() // y learnt x from its heartbeat
	waitHeartbeats(t, x.Node, 1)
	if !x.Alive(y.Addr()) {
		t.Fatal("y's heartbeat did not make it alive")
	}
}

// TestForgedHeartbeatKeepsPeerDown: peer B dies and an attacker takes its
// address. Heartbeats under a guessed key, a captured heartbeat replayed,
// and another instance's authentic heartbeat resent from B's address must
// not bring B back: only an authentic heartbeat naming B's own address
// and sent from it does.
func TestForgedHeartbeatKeepsPeerDown(t *testing.T) {
	key := mustKey(t, secret)
	clk := newFakeClock()
	bConn := listen(t, "127.0.0.2:0")
	bAddr := bConn.LocalAddr().(*net.UDPAddr).AddrPort()
	aConn := listen(t, "127.0.0.1:0")
	aAddr := aConn.LocalAddr().(*net.UDPAddr).AddrPort()
	a := startNode(t, Config{Key: key, Conn: aConn, Now: clk.Now, Peers: []netip.AddrPort{bAddr}})
	b, err := NewNode(Config{Key: key, Conn: bConn, Now: clk.Now, Peers: []netip.AddrPort{aAddr}})
	if err != nil {
		t.Fatal(err)
	}
	captured, err := b.Send(nil, aAddr, KindHeartbeat, bAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitHeartbeats(t, a.Node, 1)
	bConn.Close() // B dies
	clk.Add(DeadAfter + time.Millisecond)
	if a.Alive(bAddr) {
		t.Fatal("B alive after DeadAfter of silence")
	}

	// The attacker holds B's address now.
	evil := listen(t, bAddr.String())
	guessed, err := NewNode(Config{Key: mustKey(t, []byte("a guessed secret, not the real one")), Conn: evil, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := guessed.Send(nil, aAddr, KindHeartbeat, bAddr, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := evil.WriteToUDPAddrPort(captured, aAddr); err != nil {
		t.Fatal(err)
	}
	// C is a real instance; its heartbeat to the attacker's other socket
	// is authentic but names C.
	cConn := listen(t, "127.0.0.3:0")
	c, err := NewNode(Config{Key: key, Conn: cConn, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	trap := listen(t, "127.0.0.4:0")
	if _, err := c.Send(nil, trap.LocalAddr().(*net.UDPAddr).AddrPort(), KindHeartbeat, c.Addr(), nil); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, MaxMessage)
	_ = trap.SetReadDeadline(time.Now().Add(5 * time.Second))
	k, _, err := trap.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := evil.WriteToUDPAddrPort(buf[:k], aAddr); err != nil {
		t.Fatal(err)
	}
	s := a.Stats()
	for deadline := time.Now().Add(10 * time.Second); s.Heartbeats+s.Accepted+s.Dropped[DropBadTag]+s.Dropped[DropReplay]+s.Dropped[DropHeartbeatAddr] < 4; s = a.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: want 4 datagrams judged", s)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if s.Dropped[DropBadTag] != 1 || s.Dropped[DropReplay] != 1 || s.Dropped[DropHeartbeatAddr] != 1 || s.Heartbeats != 1 || s.Accepted != 0 {
		t.Fatalf("stats %+v: want one bad tag, one replay, one heartbeat naming another address, and only B's first heartbeat accepted", s)
	}
	if a.Alive(bAddr) {
		t.Fatal("a forged heartbeat brought the dead peer back")
	}
}
