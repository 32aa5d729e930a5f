package pathsock

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// TestResendRing: the ring keeps the last resendSlots packets, returns
// those sent after a time oldest first, and each only once.
func TestResendRing(t *testing.T) {
	var r resendRing
	t0 := time.Unix(1000, 0)
	for i := range resendSlots + 4 {
		r.add([]byte{byte(i)}, t0.Add(time.Duration(i)*time.Millisecond).UnixNano())
	}
	r.add(make([]byte, resendMax+1), t0.Add(time.Hour).UnixNano()) // too large: not kept
	// Packets 4..19 are kept; those after 9 ms are 10..19.
	got := r.since(t0.Add(9 * time.Millisecond).UnixNano())
	if len(got) != 10 {
		t.Fatalf("since 9ms: %d packets, want 10", len(got))
	}
	for i, p := range got {
		if !bytes.Equal(p, []byte{byte(10 + i)}) {
			t.Fatalf("packet %d = %v, want [%d] (oldest first)", i, p, 10+i)
		}
	}
	if again := r.since(t0.Add(9 * time.Millisecond).UnixNano()); len(again) != 0 {
		t.Fatalf("resent %d packets twice", len(again))
	}
	if rest := r.since(0); len(rest) != 6 {
		t.Fatalf("since the start: %d packets, want the 6 not taken (4..9)", len(rest))
	}
}

// TestRevivedAndRelayProbe: the failover timings of resend.go on a virtual
// clock. A reply ends a silence worth a resend only when this side sent
// since it last heard and that was silenceMin ago; the relay path in use
// is probed every relayProbeEvery while it answers and every tick once it
// looks lost, so its return is seen within about maintenanceTick.
func TestRevivedAndRelayProbe(t *testing.T) {
	t0 := time.Unix(2000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	cases := []struct {
		name            string
		now, seen, sent time.Time
		want            bool
	}{
		{"never heard", at(time.Second), time.Time{}, at(900 * time.Millisecond), false},
		{"heard since sent", at(time.Second), at(950 * time.Millisecond), at(900 * time.Millisecond), false},
		{"short silence", at(time.Second), at(950 * time.Millisecond), at(990 * time.Millisecond), false},
		{"silence", at(time.Second), at(900 * time.Millisecond), at(990 * time.Millisecond), true},
	}
	for _, c := range cases {
		if got := revived(c.now, c.seen, c.sent); got != c.want {
			t.Errorf("revived, %s: %v, want %v", c.name, got, c.want)
		}
	}

	rtt := time.Millisecond
	// Traffic flows and the relay answers: the RTT probe every 5 s.
	sent, seen, probe := at(0), at(0), at(-time.Second)
	if relayProbeDue(at(10*time.Millisecond), sent, seen, probe, rtt) {
		t.Error("relay probed 1 s after the last probe while it answers")
	}
	if !relayProbeDue(at(4*time.Second), at(4*time.Second-time.Millisecond), at(4*time.Second-time.Millisecond), probe, rtt) {
		t.Error("relay not probed relayProbeEvery after the last probe")
	}
	// The relay went silent at 0 while sending went on: suspect after
	// silenceMin, then probed at every tick.
	sent = at(150 * time.Millisecond)
	if relayProbeDue(at(50*time.Millisecond), at(50*time.Millisecond), seen, probe.Add(time.Second), rtt) {
		t.Error("relay probed before silenceMin of silence")
	}
	lastProbe := at(100 * time.Millisecond)
	if !relayProbeDue(at(160*time.Millisecond), sent, seen, lastProbe, rtt) {
		t.Error("suspect relay not probed a tick after the last probe")
	}
	if relayProbeDue(at(120*time.Millisecond), sent, seen, lastProbe, rtt) {
		t.Error("suspect relay probed twice within half a tick")
	}
	// No traffic: no probe at all.
	if relayProbeDue(at(10*time.Second), at(0), at(0), at(0), rtt) {
		t.Error("idle relay path probed")
	}

	// The peer's data arrives through the relay while the direct path
	// heard nothing for a while after this side sent on it: follow.
	follow := func(now, lastSent, lastDirect time.Time, birthday bool) (moved bool, path string) {
		pr := &peer{cands: map[netip.AddrPort]*cand{simAddr: {addr: simAddr, rtt: rtt}}, tickets: [][]byte{make([]byte, crypto.TicketSize)}}
		r := &route{kind: PathDirect, addr: simAddr}
		pr.route.Store(r)
		moved = pr.followRelayLocked(r, now, lastSent, lastDirect, birthday)
		return moved, pr.route.Load().kind
	}
	if moved, path := follow(at(time.Second), at(950*time.Millisecond), at(800*time.Millisecond), false); !moved || path != PathRelay {
		t.Errorf("did not follow the peer to the relay after 200 ms of direct silence (moved %v, path %s)", moved, path)
	}
	if moved, path := follow(at(time.Second), at(950*time.Millisecond), at(960*time.Millisecond), false); moved || path != PathDirect {
		t.Error("followed the peer to the relay although the direct path answers")
	}
	if moved, _ := follow(at(time.Second), at(950*time.Millisecond), at(800*time.Millisecond), true); moved {
		t.Error("followed the peer off a birthday path")
	}
}

// TestResendAfterPathChange: the peer is reached through the relay, and the
// relay instance holding its flow dies: packets sent meanwhile go nowhere.
// When the peer's PathUpdate with its new ticket (from the instance that
// took over) ends the silence, the packets sent since the peer was last
// heard go again at once, with the new ticket. On virtual time; the
// "relay" is a loopback socket that records the frames.
func TestResendAfterPathChange(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	relaySock, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer relaySock.Close()
	clock := &virtClock{t: time.Unix(1_800_000_000, 0)}
	s, err := newSock(Config{Identity: newIdentity(t), Conn: conn, Now: clock.now, Interfaces: func() ([]netip.Addr, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.gso.Store(false) // no writer goroutine: frames go out at once
	relayAddr := relaySock.LocalAddr().(*net.UDPAddr).AddrPort()
	s.relay.chosen.Store(&relayAddr)

	peerID := newIdentity(t)
	pr, err := s.ensurePeer(peerID.ID())
	if err != nil {
		t.Fatal(err)
	}
	oldTicket, newTicket := bytes.Repeat([]byte{1}, crypto.TicketSize), bytes.Repeat([]byte{2}, crypto.TicketSize)
	pr.mu.Lock()
	pr.tickets = [][]byte{oldTicket}
	s.fixRouteLocked(pr)
	pr.mu.Unlock()
	pr.lastSeen.Store(clock.now().UnixNano())

	// Three packets into the dead relay path.
	clock.add(10 * time.Millisecond)
	for i := range 3 {
		if _, err := s.WriteTo([]byte{0x40, byte(i)}, pr.vaddr); err != nil {
			t.Fatal(err)
		}
	}
	read := func() (ticket []byte, payload []byte) {
		t.Helper()
		buf := make([]byte, 2048)
		_ = relaySock.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := relaySock.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("no frame at the relay: %v", err)
		}
		tk, rest, err := wire.ParseRelaySend(buf[:n])
		if err != nil {
			t.Fatalf("not a RelaySend: %v", err)
		}
		return tk, rest[wire.TagLen:]
	}
	for range 3 {
		if tk, _ := read(); !bytes.Equal(tk, oldTicket) {
			t.Fatal("a packet before the change did not carry the old ticket")
		}
	}

	// Silence, then the peer's PathUpdate through the relay.
	clock.add(500 * time.Millisecond)
	shared, err := peerID.SharedKey(s.ID())
	if err != nil {
		t.Fatal(err)
	}
	upd := &wire.PathUpdate{Info: wire.PeerInfo{ID: peerID.ID(), Tickets: [][]byte{newTicket}}}
	frame := wire.SealFrame(nil, peerID.ID(), shared, wire.Message{Time: clock.now().UnixMilli(), Body: upd})
	s.sealed(frame, relayAddr, false, peerID.ID().Tag(), nil)
	for i := range 3 {
		tk, p := read()
		if !bytes.Equal(tk, newTicket) {
			t.Fatalf("resent packet %d carries the old ticket", i)
		}
		if !bytes.Equal(p, []byte{0x40, byte(i)}) {
			t.Fatalf("resent packet %d is %x", i, p)
		}
	}
	if n := s.stats.Resent.Load(); n != 3 {
		t.Fatalf("Stats.Resent %d, want 3", n)
	}
}
