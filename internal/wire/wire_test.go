package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/keymesh/keymesh/internal/crypto"
)

func ident(t testing.TB) *crypto.Identity {
	t.Helper()
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

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

func TestSealedFrame(t *testing.T) {
	a, b := ident(t), ident(t)
	ab, _ := a.SharedKey(b.ID())
	ba, _ := b.SharedKey(a.ID())
	m := Message{Time: 42, Body: &Probe{TxID: 9}}
	f := SealFrame(nil, a.ID(), ab, m)
	if Classify(f) != KindKeymesh {
		t.Fatal("sealed frame not classified as keymesh")
	}
	s, err := ParseSealed(f)
	if err != nil || s.Sender != a.ID() {
		t.Fatalf("parse: %v", err)
	}
	got, err := s.Open(ba)
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("open: %+v %v", got, err)
	}
	f[len(f)-3] ^= 0x10
	s, _ = ParseSealed(f)
	if _, err := s.Open(ba); !errors.Is(err, crypto.ErrOpen) {
		t.Fatalf("tampered frame opened: %v", err)
	}
	bad := bytes.Clone(f)
	bad[1] = 9
	if _, err := ParseSealed(bad); !errors.Is(err, ErrVersion) {
		t.Fatalf("version: %v", err)
	}
	if _, err := ParseSealed(f[:40]); !errors.Is(err, ErrShort) {
		t.Fatalf("short: %v", err)
	}
}

func TestDataAndRelayFrames(t *testing.T) {
	payload := []byte("quic packet")
	d := AppendData(nil, 0xabcdef, payload)
	tag, p, err := ParseData(d)
	if err != nil || tag != 0xabcdef || !bytes.Equal(p, payload) {
		t.Fatalf("data: %x %q %v", tag, p, err)
	}
	ticket := bytes.Repeat([]byte{1}, crypto.TicketSize)
	rs := AppendRelaySend(nil, ticket, 0x55, payload)
	tk, rest, err := ParseRelaySend(rs)
	if err != nil || !bytes.Equal(tk, ticket) || len(rest) != TagLen+len(payload) {
		t.Fatalf("relay-send: %v", err)
	}
	n := len(rs)
	out := RelayedFromSend(rs)
	if len(out) >= n {
		t.Fatal("relayed frame not smaller than the send")
	}
	tag, p, err = ParseData(out)
	if err != nil || tag != 0x55 || !bytes.Equal(p, payload) || out[0] != TypeRelayed {
		t.Fatalf("relayed: %x %q %v", tag, p, err)
	}
}

func TestClassify(t *testing.T) {
	stun := make([]byte, 20)
	stun[1] = 1
	stun[4], stun[5], stun[6], stun[7] = 0x21, 0x12, 0xA4, 0x42
	if Classify(stun) != KindSTUN {
		t.Fatal("STUN not recognised")
	}
	if Classify([]byte{0xc0, 0, 0, 1}) != KindUnknown {
		t.Fatal("QUIC long header misclassified")
	}
	if Classify(nil) != KindUnknown {
		t.Fatal("empty misclassified")
	}
}

// TestRequestProof checks that a Request's proof holds for the cookie it was
// made with and no other, that a request without a cookie carries none,
// and that a CookieReply is smaller than any request and gives back the
// request's salt.
func TestRequestProof(t *testing.T) {
	id, _ := crypto.GenerateIdentity(nil)
	shared, _ := id.SharedKey(id.ID())
	plain := AppendMessage(nil, Message{Time: 1, Body: &Register{}})
	cookie := crypto.Cookie{1, 2, 3}
	b, salt := SealRequest(nil, id.ID(), shared, plain, &cookie)
	s, err := ParseRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	if !s.ProofValid(&cookie) {
		t.Fatal("proof does not hold for its cookie")
	}
	other := crypto.Cookie{9}
	if s.ProofValid(&other) {
		t.Fatal("proof holds for another cookie")
	}
	if m, err := s.Open(shared); err != nil || m.Body.Type() != MsgRegister {
		t.Fatalf("request does not open: %v", err)
	}
	none, _ := SealRequest(nil, id.ID(), shared, plain, nil)
	if s, _ := ParseRequest(none); s.ProofValid(&cookie) {
		t.Fatal("a request without a cookie proves one")
	}
	r := AppendCookieReply(nil, cookie, salt)
	if len(r) != CookieReplyLen || len(r) >= len(b) {
		t.Fatalf("cookie reply of %d bytes to a request of %d", len(r), len(b))
	}
	c, gotSalt, err := ParseCookieReply(r)
	if err != nil || c != cookie || gotSalt != salt {
		t.Fatalf("cookie reply parsed to %x %x %v", c, gotSalt, err)
	}
	if _, err := ParseSealed(b); err == nil {
		t.Fatal("a request parses as a sealed frame")
	}
}

// TestEpochTrailer: the answers that carry the registry's boot epoch
// round-trip it, parse without it (as from an older server), and refuse a
// trailer that is not exactly 8 bytes or is 0.
func TestEpochTrailer(t *testing.T) {
	const epoch = 0x0102030405060708
	for _, body := range []Body{
		&Registered{Reflexive: netip.MustParseAddrPort("203.0.113.5:40000"), TTL: 90, Refresh: 20, Instance: "i1", Epoch: epoch},
		&ConnectReply{TxID: 79, Epoch: epoch},
		&Punch{TxID: 77, Start: 1, Epoch: epoch},
		&Error{Code: ErrCodeNotRegistered, For: MsgConnect, Text: "register first", Epoch: epoch},
	} {
		b := AppendMessage(nil, Message{Time: 1, Body: body})
		got, err := ParseMessage(b)
		if err != nil {
			t.Fatalf("%s: %v", body.Type(), err)
		}
		if !reflect.DeepEqual(got.Body, body) {
			t.Errorf("%s: got %+v, want %+v", body.Type(), got.Body, body)
		}
		if _, err := ParseMessage(b[:len(b)-8]); err != nil {
			t.Errorf("%s without its epoch: %v", body.Type(), err)
		}
		for _, cut := range []int{1, 4, 7} {
			if _, err := ParseMessage(b[:len(b)-cut]); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s with %d epoch bytes: %v, want ErrMalformed", body.Type(), 8-cut, err)
			}
		}
		zero := append(bytes.Clone(b[:len(b)-8]), make([]byte, 8)...)
		if _, err := ParseMessage(zero); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s with a zero epoch on the wire: %v, want ErrMalformed", body.Type(), err)
		}
	}
}
