package pathsock

import (
	"net"
	"net/netip"
	"testing"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// TestNATBehaviour checks the detection from the rendezvous' reflexive
// address against the address the relay observed.
func TestNATBehaviour(t *testing.T) {
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := newSock(Config{Identity: id, Conn: conn,
		Interfaces: func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	relayAt := netip.MustParseAddrPort("127.0.0.1:9")
	setRelay := func(observed string) {
		s.relay.mu.Lock()
		s.relay.binds = map[netip.AddrPort]*binding{relayAt: {observed: netip.MustParseAddrPort(observed)}}
		s.relay.chosen.Store(&relayAt)
		s.relay.mu.Unlock()
	}
	setRefl := func(a netip.AddrPort) {
		s.local.mu.Lock()
		s.local.reflexive = a
		s.local.mu.Unlock()
	}
	if got := s.NATBehaviour(); got != wire.NATUnknown {
		t.Fatalf("nothing known: %d", got)
	}
	setRefl(netip.MustParseAddrPort("203.0.113.7:40000"))
	if got := s.NATBehaviour(); got != wire.NATUnknown {
		t.Fatalf("no relay yet: %d", got)
	}
	setRelay("203.0.113.7:40000")
	if got := s.NATBehaviour(); got != wire.NATEndpointIndep {
		t.Fatalf("same port: %d, want endpoint-independent", got)
	}
	setRelay("203.0.113.7:51234")
	if got := s.NATBehaviour(); got != wire.NATAddrPortDepend {
		t.Fatalf("other port: %d, want address-and-port-dependent", got)
	}
	setRelay("198.51.100.7:40000")
	if got := s.NATBehaviour(); got != wire.NATUnknown {
		t.Fatalf("other address: %d, want unknown", got)
	}
	setRefl(s.LocalAddrPort())
	if got := s.NATBehaviour(); got != wire.NATNone {
		t.Fatalf("reflexive is local: %d, want none", got)
	}
}
