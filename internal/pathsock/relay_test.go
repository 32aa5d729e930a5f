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

// fakeRelay is a bare UDP socket standing in for a relay, so a test can
// send the peer whatever answers it likes.
type fakeRelay struct {
	t    *testing.T
	conn *net.UDPConn
}

func newFakeRelay(t *testing.T) *fakeRelay {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &fakeRelay{t: t, conn: c}
}

// nextBind returns the next RelayBind that arrives and where from.
func (r *fakeRelay) nextBind() (wire.RelayBind, *net.UDPAddr) {
	r.t.Helper()
	buf := make([]byte, 2048)
	r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, from, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			r.t.Fatalf("no bind arrived: %v", err)
		}
		if b, err := wire.ParseRelayBind(buf[:n]); err == nil {
			return b, from
		}
	}
}

func (r *fakeRelay) send(to *net.UDPAddr, b []byte) {
	r.t.Helper()
	if _, err := r.conn.WriteToUDP(b, to); err != nil {
		r.t.Fatal(err)
	}
}

// TestRelayBindHandshake: the path layer answers a relay's challenge by
// binding again with its cookie, takes the ticket from the RelayBound, and
// ignores challenges and RelayBounds that do not echo its last bind (what
// an off-path forger spoofing the relay's address would send).
func TestRelayBindHandshake(t *testing.T) {
	r := newFakeRelay(t)
	s := newTestSock(t, nil)
	s.SetRelays([]string{r.conn.LocalAddr().String()})

	good, forged := crypto.Cookie{1, 1, 1}, crypto.Cookie{6, 6, 6}
	forgedTicket := bytes.Repeat([]byte{6}, crypto.TicketSize)
	b, from := r.nextBind()
	if b.Cookie != (crypto.Cookie{}) {
		t.Fatalf("first bind carries cookie %x, want none", b.Cookie)
	}
	// Answer each bind with forgeries first, then the real challenge,
	// until a bind carries the real cookie (a retry may cross an answer).
	for tries := 0; b.Cookie != good; tries++ {
		if tries == 5 {
			t.Fatal("five challenges answered, no bind carries the cookie")
		}
		if b.Cookie == forged {
			t.Fatal("a challenge that did not echo the bind was taken")
		}
		r.send(from, wire.AppendRelayChallenge(nil, wire.RelayChallenge{Cookie: forged, Echo: wire.Echo{9}}))
		r.send(from, wire.AppendRelayBound(nil, wire.RelayBound{Ticket: forgedTicket, Observed: from.AddrPort(), Expiry: time.Now().Add(time.Hour), Echo: wire.Echo{9}}))
		r.send(from, wire.AppendRelayChallenge(nil, wire.RelayChallenge{Cookie: good, Echo: b.Echo}))
		b, from = r.nextBind()
	}
	if len(s.Tickets()) != 0 {
		t.Fatal("a RelayBound that did not echo the bind was taken")
	}
	ticket := bytes.Repeat([]byte{1}, crypto.TicketSize)
	next := crypto.Cookie{2, 2, 2}
	took := func() bool {
		tk := s.Tickets()
		return len(tk) == 1 && bytes.Equal(tk[0], ticket)
	}
	for tries := 0; !took(); tries++ {
		if tries == 5 {
			t.Fatal("five RelayBounds sent, the ticket was not taken")
		}
		// Answer the last bind seen; a retry that crossed the answer gets
		// its own.
		r.send(from, wire.AppendRelayBound(nil, wire.RelayBound{Ticket: ticket, Observed: from.AddrPort(), Expiry: time.Now().Add(time.Hour), Cookie: next, Echo: b.Echo}))
		r.conn.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
		buf := make([]byte, 2048)
		for !took() {
			n, f, err := r.conn.ReadFromUDP(buf)
			if err != nil {
				break // no retry: look again
			}
			if nb, err := wire.ParseRelayBind(buf[:n]); err == nil {
				b, from = nb, f
				break
			}
		}
	}
	// A forced re-bind carries the RelayBound's cookie (skipping retries
	// sent before the RelayBound arrived).
	s.forceRebind()
	for tries := 0; b.Cookie == good && tries < 5; tries++ {
		b, _ = r.nextBind()
	}
	if b.Cookie != next {
		t.Fatalf("re-bind carries cookie %x, want the RelayBound's %x", b.Cookie, next)
	}
}

// TestRelayGoneRebindsAndAnnounces: the shell around the state machine, on
// virtual time (the layer's ticks are driven by the test; only its reader
// runs). Data flows to a peer through the relay; the relay instance dies
// for good and, a few hundred milliseconds later, another instance behind
// the same address (the same ticket keys) takes its traffic. The layer
// must find the relay path lost within relayLostAfter and a tick, keep
// binding every lostRetry while unanswered, and once the new instance
// answers, re-register and announce the new ticket (OnLocalChange).
func TestRelayGoneRebindsAndAnnounces(t *testing.T) {
	keys := newTicketKeys(t)
	r1 := startRelay(t, keys, "127.0.0.1:0")
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	// Virtual time from now: the relay checks the binds' clock.
	clock := &virtClock{t: time.Now()}
	changed := make(chan string, 16)
	s, err := newSock(Config{
		Identity:      newIdentity(t),
		Conn:          conn,
		Now:           clock.now,
		Interfaces:    func() ([]netip.Addr, error) { return nil, nil },
		OnLocalChange: func() { changed <- "" },
		NoDirect:      true,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.wg.Add(1)
	go s.readLoop()
	defer s.Close()
	s.gso.Store(false)

	// Bound to r1 (the challenge and the bind answered in real time).
	s.SetRelays([]string{r1.addr.String()})
	waitFor(t, 5*time.Second, "relay bound", func() bool {
		s.tickRelays(clock.now())
		_, ok := s.Relay()
		return ok && len(s.Tickets()) > 0
	})
	drain := func() {
		for {
			select {
			case <-changed:
			default:
				return
			}
		}
	}
	drain()

	// A peer reached through the relay, data flowing both ways.
	other := newIdentity(t)
	pr, err := s.ensurePeer(other.ID())
	if err != nil {
		t.Fatal(err)
	}
	pr.mu.Lock()
	pr.tickets = [][]byte{s.Tickets()[0]} // any ticket the keys open
	s.fixRouteLocked(pr)
	pr.mu.Unlock()
	tick := func() time.Time {
		now := clock.add(maintenanceTick)
		if _, err := s.WriteTo([]byte{0x40, 1}, pr.vaddr); err != nil {
			t.Fatal(err)
		}
		s.tickPeers(now)
		s.tickRelays(now)
		return now
	}
	for range 10 {
		pr.lastSeen.Store(tick().UnixNano()) // the peer's acknowledgements
	}

	// r1 dies; nothing comes back any more.
	r1.stop()
	kill := clock.now()
	for s.relayLostAt().IsZero() {
		if now := tick(); now.Sub(kill) > 5*time.Second {
			t.Fatal("the relay path was never found lost")
		}
	}
	if took := clock.now().Sub(kill); took > relayLostAfter+maintenanceTick {
		t.Fatalf("relay path found lost %s after the relay died, want within %s", took, relayLostAfter+maintenanceTick)
	}
	// Binds go unanswered for 400 ms, then r2 holds the address.
	for clock.now().Sub(kill) < 700*time.Millisecond {
		tick()
	}
	startRelay(t, keys, r1.addr.String())
	moved := clock.now()
	for announced := false; !announced; {
		now := tick()
		if now.Sub(moved) > 5*time.Second {
			t.Fatal("no announcement after the new instance took the address")
		}
		if !s.bindSentAt(r1.addr).Equal(now) {
			continue
		}
		select {
		case <-changed:
			announced = true
		case <-time.After(5 * time.Second):
			// Lost on loopback: the next retry.
		}
	}
	if took := clock.now().Sub(moved); took > lostRetry+maintenanceTick {
		t.Fatalf("the new instance's ticket was announced %s after it took the address, want within %s", took, lostRetry+maintenanceTick)
	}
}

// relayLostAt is when the relay path was found lost (zero: not lost).
func (s *Sock) relayLostAt() time.Time {
	s.relay.mu.Lock()
	defer s.relay.mu.Unlock()
	return s.relay.lostAt
}

// bindSentAt is when the last RelayBind went to the relay at a.
func (s *Sock) bindSentAt(a netip.AddrPort) time.Time {
	s.relay.mu.Lock()
	defer s.relay.mu.Unlock()
	if b := s.relay.binds[a]; b != nil {
		return b.sent
	}
	return time.Time{}
}
