package pathsock

import (
	"slices"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/wire"
)

// TestFSMAnswerUpdate, on virtual time: a PathUpdate that replaces the
// peer's ticket while this side announces a change of its own is answered
// at once, at most once per announceGap; without a new ticket, or with
// nothing announced lately, it is not.
func TestFSMAnswerUpdate(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	pr := &peer{}
	if pr.answerUpdateLocked(t0, false, true) {
		t.Fatal("answered an update that kept the ticket")
	}
	if pr.answerUpdateLocked(t0, true, false) {
		t.Fatal("answered a new ticket while announcing nothing")
	}
	if !pr.answerUpdateLocked(t0, true, true) {
		t.Fatal("a new ticket while announcing was not answered")
	}
	// Two peers that answer each other's new tickets stop.
	if pr.answerUpdateLocked(t0.Add(announceGap-time.Millisecond), true, true) {
		t.Fatal("answered twice within announceGap")
	}
	if !pr.answerUpdateLocked(t0.Add(announceGap), true, true) {
		t.Fatal("a new ticket announceGap after the last answer was not answered")
	}
}

// TestTicketChangeAnswered: both peers lost their direct path to a NAT
// that forgot its mappings (A's): B announced its change through A's old
// ticket, which leads nowhere. A's PathUpdate with its new ticket makes B
// send its PathUpdate again at once, through the new ticket, not at its
// next round (announceGap later); when B announces nothing, it does not.
func TestTicketChangeAnswered(t *testing.T) {
	r := startRelay(t, newTicketKeys(t), "127.0.0.1:0")
	noDirect := func(c *Config) { c.NoDirect = true }
	a, b := pair(t, r, noDirect, noDirect)
	waitFor(t, 3*time.Second, "a relay route to b", func() bool { return path(b, a) == "relay" })
	// The announcement rounds after the relay bind end.
	waitFor(t, 10*time.Second, "announcements sent", func() bool {
		b.local.mu.Lock()
		defer b.local.mu.Unlock()
		return b.local.rounds == 0 && time.Since(b.local.lastAnnounce) >= announceGap
	})
	lastUpdateFromB := func() int64 {
		pr := a.peerByID(b.ID())
		pr.mu.Lock()
		defer pr.mu.Unlock()
		return pr.lastUpdate
	}
	real := info(a)
	stale := slices.Clone(real.Tickets[0])
	stale[len(stale)-1] ^= 1
	stamp := time.Now().UnixMilli()
	update := func(ticket []byte) {
		t.Helper()
		stamp++
		u := &wire.PathUpdate{Info: real}
		u.Info.Tickets = [][]byte{ticket}
		b.onPathUpdate(a.ID(), stamp, u, r.addr, false)
	}
	update(stale) // B now holds A's ticket of before the flush

	// Not announcing: a new ticket is not answered.
	before := lastUpdateFromB()
	update(real.Tickets[0])
	time.Sleep(300 * time.Millisecond) // a relayed round trip on loopback is far shorter
	if got := lastUpdateFromB(); got != before {
		t.Fatal("B answered a new ticket while it announced nothing")
	}

	update(stale)
	b.local.mu.Lock()
	b.local.lastAnnounce = time.Now() // B just announced, through the stale ticket
	b.local.mu.Unlock()
	update(real.Tickets[0])
	waitFor(t, 3*time.Second, "B's PathUpdate through A's new ticket", func() bool { return lastUpdateFromB() != before })
}
