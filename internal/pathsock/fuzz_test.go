package pathsock

import (
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// FuzzHandle feeds arbitrary datagrams to the socket's demultiplexer, as if
// they came from a known peer's address: nothing may panic, and the peer's
// state must stay sane.
func FuzzHandle(f *testing.F) {
	me, peerID := newIdentity(f), newIdentity(f)
	shared, _ := peerID.SharedKey(me.ID())
	seal := func(b wire.Body) []byte {
		return wire.SealFrame(nil, peerID.ID(), shared, wire.Message{Time: time.Now().UnixMilli(), Body: b})
	}
	ticket := make([]byte, crypto.TicketSize)
	f.Add(wire.AppendData(nil, peerID.ID().Tag(), []byte{0x40, 1, 2, 3}))
	f.Add(wire.AppendData(nil, 12345, []byte{0x40}))
	f.Add(seal(&wire.Probe{TxID: 1, Dest: netip.MustParseAddrPort("127.0.0.1:9")}))
	f.Add(seal(&wire.ProbeReply{TxID: 2}))
	f.Add(seal(&wire.PathUpdate{Info: wire.PeerInfo{ID: peerID.ID(), Candidates: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}, Tickets: [][]byte{ticket}}}))
	relayed := wire.RelayedFromSend(wire.AppendRelaySend(nil, ticket, peerID.ID().Tag(), seal(&wire.Probe{TxID: 3})))
	f.Add(relayed)
	f.Add(wire.AppendRelayBound(nil, wire.RelayBound{Ticket: ticket, Observed: netip.MustParseAddrPort("127.0.0.1:9"), Expiry: time.Now().Add(time.Minute)}))
	f.Add(wire.AppendRelayChallenge(nil, wire.RelayChallenge{Cookie: crypto.Cookie{1}}))
	f.Add([]byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0x21, 1})

	s, err := newSock(Config{
		Identity:   me,
		ListenAddr: "127.0.0.1:0",
		Interfaces: func() ([]netip.Addr, error) { return nil, nil },
		QueueLen:   4,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	from := netip.MustParseAddrPort("127.0.0.1:9")
	if err := s.AddPeer(wire.PeerInfo{ID: peerID.ID(), Reflexive: from, Tickets: [][]byte{ticket}}, time.Now()); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		bp := s.getBuf()
		if len(b) > len(*bp) {
			b = b[:len(*bp)]
		}
		n := copy(*bp, b)
		s.handle(bp, n, from)
		// Drain what reached the QUIC queue.
		for {
			select {
			case pk := <-s.in:
				s.putBuf(pk.bp)
				continue
			default:
			}
			break
		}
		st, ok := s.Peer(peerID.ID())
		if !ok {
			t.Fatal("peer forgotten")
		}
		if st.Path != PathRelay && st.Path != PathDirect {
			t.Fatalf("path %q", st.Path)
		}
	})
}
