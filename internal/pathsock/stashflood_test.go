package pathsock

import (
	"net"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/wire"
)

// TestStashFloodKeepsEarlyPacket is the attack on the stash of early data
// frames: a stranger fills it with data frames under made-up tags (a few
// dozen a second keep it full), then a newly introduced peer's first packet
// arrives through the relay before its introduction. The stash drops its
// oldest entry for the new one, so the peer's packet is delivered once the
// peer is added instead of waiting for a retransmission.
func TestStashFloodKeepsEarlyPacket(t *testing.T) {
	r := startRelay(t, newTicketKeys(t), "127.0.0.1:0")
	a, b := newTestSock(t, nil), newTestSock(t, nil)
	a.SetRelays([]string{r.addr.String()})
	b.SetRelays([]string{r.addr.String()})
	waitFor(t, 3*time.Second, "tickets", func() bool { return len(a.Tickets()) > 0 && len(b.Tickets()) > 0 })

	// The flood: data frames under made-up tags, to b's address.
	flood := udpOn(t, "127.0.0.1:0")
	to := net.UDPAddrFromAddrPort(b.LocalAddrPort())
	for i := range maxStash {
		f := wire.AppendData(nil, 0xf100d000+uint64(i), []byte("made-up tag"))
		if _, err := flood.WriteToUDP(f, to); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 2*time.Second, "full stash", func() bool { return b.Stats().Stashed.Load() >= maxStash })

	// a knows b, b does not know a yet: a's packet must find a place.
	if err := a.AddPeer(info(b), time.Now()); err != nil {
		t.Fatal(err)
	}
	a.WriteTo([]byte("early"), VirtualAddr(b.ID()))
	waitFor(t, 2*time.Second, "early packet stashed despite the flood", func() bool {
		return b.Stats().Stashed.Load() > maxStash
	})
	if err := b.AddPeer(info(a), time.Now()); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 100)
	n, from, err := b.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "early" || from.String() != VirtualAddr(a.ID()).String() {
		t.Fatalf("got %q from %v, %v; want the early packet from a", buf[:n], from, err)
	}
}
