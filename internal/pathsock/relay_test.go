package pathsock

import (
	"bytes"
	"net"
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
