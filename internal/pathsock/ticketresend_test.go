package pathsock

import (
	"slices"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/wire"
)

// TestTicketChangeResends: a PathUpdate that gives a relayed peer a new
// ticket (it moved into or out of a stream tunnel) sends the last packets
// again to the new one, each once; an update with the same ticket resends
// nothing. The peer never answers here, so nothing else resends.
func TestTicketChangeResends(t *testing.T) {
	r := startRelay(t, newTicketKeys(t), "127.0.0.1:0")
	noDirect := func(c *Config) { c.NoDirect = true }
	a, b := pair(t, r, noDirect, noDirect)
	waitFor(t, 3*time.Second, "a relay route to b", func() bool { return path(a, b) == "relay" })
	old := info(b)
	b.Close() // silent from now on: no revival resends
	send := func(n int) {
		for i := range n {
			if _, err := a.WriteTo([]byte{byte(i)}, VirtualAddr(b.ID())); err != nil {
				t.Fatal(err)
			}
		}
	}
	stamp := time.Now().UnixMilli()
	update := func(ticket []byte) uint64 {
		t.Helper()
		before := a.Stats().Resent.Load()
		stamp++
		u := &wire.PathUpdate{Info: old}
		u.Info.Tickets = [][]byte{ticket}
		a.onPathUpdate(b.ID(), stamp, u, r.addr, false)
		return a.Stats().Resent.Load() - before
	}

	send(3)
	if n := update(old.Tickets[0]); n != 0 {
		t.Fatalf("an update with the same ticket resent %d packets", n)
	}
	moved := slices.Clone(old.Tickets[0])
	moved[len(moved)-1] ^= 1
	if n := update(moved); n != 3 {
		t.Fatalf("a new ticket resent %d packets, want the 3 sent", n)
	}
	if n := update(old.Tickets[0]); n != 0 {
		t.Fatalf("a second ticket change resent %d packets already resent", n)
	}
}
