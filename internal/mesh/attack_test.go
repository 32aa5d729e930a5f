package mesh

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/sockopt"
)

// listenShared opens a socket on addr with SO_REUSEPORT, so that a second
// socket may bind the very same address and port: how a test sends
// datagrams whose source is another instance's mesh address.
func listenShared(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	c, err := sockopt.ListenUDP(context.Background(), addr, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// forged is a well-formed, fresh mesh message from the victim's address
// whose tag is made up: what a stranger without the peer secret can send.
// Its sender is random, as the stranger does not know the victim's.
func forged(k *Key, kind Kind, victim netip.AddrPort, now time.Time, payload int) []byte {
	var s [8]byte
	_, _ = rand.Read(s[:])
	b, _ := k.Append(nil, &Message{Kind: kind, Time: now.UnixMilli(), Sender: binary.BigEndian.Uint64(s[:]), Seq: 1,
		Dst: victim, Payload: make([]byte, payload)})
	return b
}

// TestSpoofedFloodKeepsVictimAlive: a stranger floods node A with forged
// messages carrying healthy instance V's exact mesh address and port (a
// second socket bound to it), at five times A's per-source rate, every
// heartbeat interval. V keeps beating. Every one of V's heartbeats must be
// accepted and V must never look suspect or dead to A: a datagram whose
// tag does not verify spends none of the budget an authenticated instance
// depends on. The forgeries' tag checks stay bounded by the unverified
// budget.
func TestSpoofedFloodKeepsVictimAlive(t *testing.T) {
	const (
		rate       = 10 // per source, per second, as Burst too
		unverified = 20 // the unverified budget, per second and burst
		rounds     = 6
		flood      = 5 * rate // per round: 25 times the per-source rate
	)
	key, guessed := mustKey(t, secret), mustKey(t, []byte("a guessed secret, not the real one"))
	clk := newFakeClock()
	vConn := listenShared(t, "127.0.0.2:0")
	vAddr := vConn.LocalAddr().(*net.UDPAddr).AddrPort()
	evil := listenShared(t, vAddr.String())
	aConn := listen(t, "127.0.0.1:0")
	aAddr := aConn.LocalAddr().(*net.UDPAddr).AddrPort()
	a := startNode(t, Config{Key: key, Conn: aConn, Now: clk.Now, Rate: rate, Burst: rate,
		UnverifiedRate: unverified, Peers: []netip.AddrPort{vAddr}})
	v, err := NewNode(Config{Key: key, Conn: vConn, Now: clk.Now, Peers: []netip.AddrPort{aAddr}})
	if err != nil {
		t.Fatal(err)
	}
	v.Beat() // V is a healthy instance A has heard from
	received := uint64(1)
	waitStats(t, a.Node, received)
	for r := range rounds {
		clk.Add(HeartbeatInterval)
		for i := range flood {
			kind := KindHeartbeat
			if i%2 == 1 {
				kind = KindRelayed
			}
			if _, err := evil.WriteToUDPAddrPort(forged(guessed, kind, vAddr, clk.Now(), 16*(i%4)), aAddr); err != nil {
				t.Fatal(err)
			}
		}
		v.Beat()
		received += flood + 1
		st := waitStats(t, a.Node, received)
		if st.Heartbeats != uint64(r)+2 {
			t.Fatalf("round %d: %d of V's %d heartbeats accepted under a spoofed flood (stats %+v)", r, st.Heartbeats, r+2, st)
		}
		if a.Suspect(vAddr) || !a.Alive(vAddr) {
			t.Fatalf("round %d: V suspect %v, alive %v under a spoofed flood", r, a.Suspect(vAddr), a.Alive(vAddr))
		}
	}
	st := a.Stats()
	// The forgeries had their tags checked within the unverified budget:
	// its burst and its refill over the rounds.
	if limit := uint64(unverified + unverified*rounds*HeartbeatInterval/time.Second); st.Dropped[DropBadTag] > limit {
		t.Fatalf("%d forged tags checked, want at most %d (the unverified budget)", st.Dropped[DropBadTag], limit)
	}
	if st.Dropped[DropUnverified] == 0 || st.Accepted != 0 {
		t.Fatalf("stats %+v: want forgeries beyond the unverified budget dropped unchecked, none accepted", st)
	}
}
