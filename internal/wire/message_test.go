package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/keymesh/keymesh/internal/crypto"
)

func sampleBodies(t testing.TB) []Body {
	a := ident(t).ID()
	info := PeerInfo{
		ID:         a,
		Reflexive:  netip.MustParseAddrPort("203.0.113.5:40000"),
		Candidates: []netip.AddrPort{netip.MustParseAddrPort("100.64.1.2:40000"), netip.MustParseAddrPort("[fd00::1]:9")},
		Tickets:    [][]byte{bytes.Repeat([]byte{7}, crypto.TicketSize)},
		NAT:        NATEndpointIndep,
	}
	return []Body{
		&Register{Cookie: crypto.Cookie{1, 2}, NAT: NATAddrPortDepend, Candidates: info.Candidates, Tickets: info.Tickets, AllowAny: false, Allowed: []crypto.PeerID{a}, Token: []byte("tok")},
		&Registered{Reflexive: info.Reflexive, TTL: 90, Refresh: 20, Relays: []string{"203.0.113.2:3479"}, StreamRelays: []string{"wss://relay.example/"}, TURNUser: "1:abc", TURNPass: "pw", TURNURIs: []string{"turn:203.0.113.2:3480"}, Instance: "i1"},
		&Challenge{Cookie: crypto.Cookie{9}, For: MsgRegister},
		&Connect{Cookie: crypto.Cookie{3}, TxID: 77, Target: a},
		&Connect{TxID: 78, TargetAddr: a.OverlayAddr()},
		&ConnectReply{TxID: 77, Found: true, Peer: info, Start: 123456},
		&ConnectReply{TxID: 79},
		&Punch{TxID: 77, Peer: info, Start: 123456},
		&Error{Code: ErrCodeNotRegistered, For: MsgConnect, Text: "register first"},
		&Probe{TxID: 5, Dest: info.Reflexive},
		&ProbeReply{TxID: 5, Observed: info.Reflexive},
		&PathUpdate{Info: info},
		&Report{Cookie: crypto.Cookie{4}, Initiator: true, LocalNAT: NATAddrPortDepend, RemoteNAT: NATEndpointIndep, Outcome: OutcomeDirect, FirstByteMs: 120, DirectMs: 480, Switches: 1},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, body := range sampleBodies(t) {
		m := Message{Time: 1700000000123, Body: body}
		b := AppendMessage(nil, m)
		got, err := ParseMessage(b)
		if err != nil {
			t.Fatalf("%s: %v", body.Type(), err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("%s: round trip\n got %+v\nwant %+v", body.Type(), got.Body, m.Body)
		}
		for cut := 0; cut < len(b); cut++ {
			if _, err := ParseMessage(b[:cut]); err == nil {
				t.Fatalf("%s: accepted truncation at %d", body.Type(), cut)
			}
		}
		if _, err := ParseMessage(append(bytes.Clone(b), 0)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: trailing byte: %v", body.Type(), err)
		}
	}
}
