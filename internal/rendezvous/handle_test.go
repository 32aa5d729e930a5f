package rendezvous

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/turnrelay"
	"github.com/keymesh/keymesh/internal/wire"
)

func TestRegisterCookieThenRegistered(t *testing.T) {
	f := newFixture(t, nil)
	a := f.newPeer("203.0.113.5:40000")
	reg := &wire.Register{
		NAT:        wire.NATEndpointIndep,
		Candidates: []netip.AddrPort{netip.MustParseAddrPort("100.64.1.2:40000"), {}, netip.MustParseAddrPort("0.0.0.0:1")},
		AllowAny:   true,
	}
	req := f.seal(a, reg)
	out := f.exchange(a.addr, req)
	if len(out) != 1 || out[0].to != a.addr {
		t.Fatalf("first register: %d replies, want one cookie reply to the sender", len(out))
	}
	if len(out[0].b) > len(req) {
		t.Fatalf("cookie reply of %d bytes answers a %d-byte request: amplification", len(out[0].b), len(req))
	}
	cookie := f.cookieOf(out)
	if got := value(f.srv.m.keyComputes); got != 0 {
		t.Fatalf("a request without the cookie proof cost %v X25519s", got)
	}
	if got := f.rejected("no_cookie"); got != 1 {
		t.Fatalf("no_cookie = %v, want 1", got)
	}
	if _, err := f.reg.Get(context.Background(), a.id.ID()); !errors.Is(err, discovery.ErrNotFound) {
		t.Fatalf("registered without a cookie: %v", err)
	}

	a.cookie = cookie
	reg.Cookie = cookie
	out = f.exchange(a.addr, f.seal(a, reg))
	if len(out) != 1 {
		t.Fatalf("%d replies", len(out))
	}
	r, ok := f.open(a, out[0].b).Body.(*wire.Registered)
	if !ok {
		t.Fatalf("got %T, want Registered", f.open(a, out[0].b).Body)
	}
	if r.Reflexive != a.addr || r.TTL != 90 || r.Refresh != 20 || r.Instance != "test-1" {
		t.Fatalf("registered = %+v", r)
	}
	if len(r.Relays) != 1 || r.Relays[0] != "198.51.100.7:3479" || len(r.TURNURIs) != 1 {
		t.Fatalf("relays = %v, turn URIs = %v", r.Relays, r.TURNURIs)
	}
	// The TURN user is the whole peer ID: short IDs collide among many
	// peers, and colliding peers would share (and exhaust) one quota.
	user, pass := crypto.TURNCredentials([]byte("turn-secret"), a.id.ID().String(), time.Hour, f.clock.Now())
	if r.TURNUser != user || r.TURNPass != pass {
		t.Fatalf("turn credentials %q/%q, want %q/%q", r.TURNUser, r.TURNPass, user, pass)
	}
	if _, name, err := turnrelay.ParseUsername(r.TURNUser); err != nil || name != a.id.ID().String() {
		t.Fatalf("TURN user %q (%v), want the full peer ID %s", name, err, a.id.ID())
	}
	rec, err := f.reg.Get(context.Background(), a.id.ID())
	if err != nil {
		t.Fatal(err)
	}
	if rec.Reflexive != a.addr || len(rec.Candidates) != 1 || rec.NAT != wire.NATEndpointIndep || !rec.Policy.AllowAny {
		t.Fatalf("record = %+v (unusable candidates must be dropped)", rec)
	}
	if got := value(f.srv.m.registrations); got != 1 {
		t.Fatalf("registrations = %v", got)
	}
}

func TestCookieBoundToAddress(t *testing.T) {
	f := newFixture(t, nil)
	a := f.newPeer("203.0.113.5:40000")
	f.register(a, wire.Register{AllowAny: true})
	// The same peer from another address must prove that one too.
	moved := netip.MustParseAddrPort("203.0.113.5:40001")
	out := f.exchange(moved, f.seal(a, &wire.Register{Cookie: a.cookie, AllowAny: true}))
	if len(out) != 1 {
		t.Fatal("no reply")
	}
	if c := f.cookieOf(out); c == a.cookie {
		t.Fatal("a cookie made for another address was accepted")
	}
	// An expired cookie (two windows later) is challenged too.
	f.clock.Add(2*crypto.CookieWindow + time.Second)
	out = f.exchange(a.addr, f.seal(a, &wire.Register{Cookie: a.cookie, AllowAny: true}))
	if c := f.cookieOf(out); c == a.cookie {
		t.Fatal("an expired cookie was accepted")
	}
}

func TestConnect(t *testing.T) {
	f := newFixture(t, nil)
	a := f.newPeer("203.0.113.5:40000")
	b := f.newPeer("198.51.100.9:50000")
	candA := []netip.AddrPort{netip.MustParseAddrPort("100.64.1.2:40000")}
	candB := []netip.AddrPort{netip.MustParseAddrPort("100.64.2.3:50000")}
	ticket := bytes.Repeat([]byte{7}, crypto.TicketSize)
	f.register(a, wire.Register{Candidates: candA, AllowAny: true, NAT: wire.NATEndpointIndep})
	f.register(b, wire.Register{Candidates: candB, Tickets: [][]byte{ticket}, Allowed: []crypto.PeerID{a.id.ID()}, NAT: wire.NATAddrPortDepend})

	for _, byAddr := range []bool{false, true} {
		c := &wire.Connect{Cookie: a.cookie, TxID: 42}
		if byAddr {
			c.TargetAddr = b.id.ID().OverlayAddr()
		} else {
			c.Target = b.id.ID()
		}
		out := f.exchange(a.addr, f.seal(a, c))
		if len(out) != 2 {
			t.Fatalf("byAddr=%v: %d replies, want punch + reply", byAddr, len(out))
		}
		if out[0].to != b.addr || out[1].to != a.addr {
			t.Fatalf("replies to %v and %v, want %v (punch) and %v (reply)", out[0].to, out[1].to, b.addr, a.addr)
		}
		p, ok := f.open(b, out[0].b).Body.(*wire.Punch)
		if !ok {
			t.Fatal("B did not get a Punch")
		}
		r, ok := f.open(a, out[1].b).Body.(*wire.ConnectReply)
		if !ok || !r.Found {
			t.Fatalf("A got %+v, want found", r)
		}
		if p.TxID != 42 || r.TxID != 42 || p.Start != r.Start || p.Start <= f.clock.Now().UnixMilli() {
			t.Fatalf("punch %+v / reply %+v: txid and a shared future start", p, r)
		}
		if p.Peer.ID != a.id.ID() || p.Peer.Reflexive != a.addr || len(p.Peer.Candidates) != 1 || p.Peer.Candidates[0] != candA[0] {
			t.Fatalf("punch peer = %+v", p.Peer)
		}
		if r.Peer.ID != b.id.ID() || r.Peer.Reflexive != b.addr || r.Peer.Candidates[0] != candB[0] ||
			len(r.Peer.Tickets) != 1 || !bytes.Equal(r.Peer.Tickets[0], ticket) || r.Peer.NAT != wire.NATAddrPortDepend {
			t.Fatalf("reply peer = %+v", r.Peer)
		}
	}
	if got := value(f.srv.m.connectsFound); got != 2 {
		t.Fatalf("connects found = %v", got)
	}
	if got := value(f.srv.m.punches); got != 2 {
		t.Fatalf("punches = %v", got)
	}
}

// A connect refused by the target's policy is answered exactly like a
// connect to a peer nobody registered.
func TestPolicyRefusalLooksLikeUnknown(t *testing.T) {
	f := newFixture(t, nil)
	a := f.newPeer("203.0.113.5:40000")
	b := f.newPeer("198.51.100.9:50000")
	f.register(a, wire.Register{AllowAny: true})
	f.register(b, wire.Register{Allowed: []crypto.PeerID{{1, 2, 3}}}) // not A
	stranger, _ := crypto.GenerateIdentity(nil)

	ask := func(target crypto.PeerID) (int, wire.Message) {
		out := f.exchange(a.addr, f.seal(a, &wire.Connect{Cookie: a.cookie, TxID: 9, Target: target}))
		if len(out) != 1 || out[0].to != a.addr {
			t.Fatalf("%d replies, want one to A (and no punch)", len(out))
		}
		return len(out[0].b), f.open(a, out[0].b)
	}
	nRefused, refused := ask(b.id.ID())
	nUnknown, unknown := ask(stranger.ID())
	if nRefused != nUnknown {
		t.Fatalf("refused reply %d bytes, unknown %d: distinguishable", nRefused, nUnknown)
	}
	r1, _ := refused.Body.(*wire.ConnectReply)
	r2, _ := unknown.Body.(*wire.ConnectReply)
	if r1 == nil || r2 == nil || r1.Found || r2.Found {
		t.Fatalf("replies %+v and %+v, want not found", refused.Body, unknown.Body)
	}
	e1 := wire.AppendMessage(nil, wire.Message{Body: r1})
	e2 := wire.AppendMessage(nil, wire.Message{Body: r2})
	if !bytes.Equal(e1, e2) {
		t.Fatal("refused and unknown replies differ in content")
	}
	// Overlay-address lookups behave the same.
	out := f.exchange(a.addr, f.seal(a, &wire.Connect{Cookie: a.cookie, TxID: 9, TargetAddr: b.id.ID().OverlayAddr()}))
	if r, _ := f.open(a, out[0].b).Body.(*wire.ConnectReply); r == nil || r.Found {
		t.Fatal("refused by address: found")
	}
	if got := value(f.srv.m.connectsNone); got != 3 {
		t.Fatalf("connects not found = %v, want 3", got)
	}
}

func TestConnectRequiresRegistration(t *testing.T) {
	f := newFixture(t, nil)
	a := f.newPeer("203.0.113.5:40000")
	// Get a cookie through a connect's cookie reply.
	out := f.exchange(a.addr, f.seal(a, &wire.Connect{TxID: 1, Target: crypto.PeerID{9}}))
	cookie := f.cookieOf(out)
	out = f.exchange(a.addr, f.seal(a, &wire.Connect{Cookie: cookie, TxID: 1, Target: crypto.PeerID{9}}))
	e, ok := f.open(a, out[0].b).Body.(*wire.Error)
	if !ok || e.Code != wire.ErrCodeNotRegistered || e.For != wire.MsgConnect {
		t.Fatalf("got %+v, want Error NotRegistered", f.open(a, out[0].b).Body)
	}
}

func TestJoinToken(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.JoinToken = []byte("let-me-in") })
	a := f.newPeer("203.0.113.5:40000")
	out := f.exchange(a.addr, f.seal(a, &wire.Register{AllowAny: true}))
	a.cookie = f.cookieOf(out)
	out = f.exchange(a.addr, f.seal(a, &wire.Register{Cookie: a.cookie, Token: []byte("guess")}))
	if e, ok := f.open(a, out[0].b).Body.(*wire.Error); !ok || e.Code != wire.ErrCodeBadToken {
		t.Fatal("a wrong join token was not refused")
	}
	out = f.exchange(a.addr, f.seal(a, &wire.Register{Cookie: a.cookie, Token: []byte("let-me-in")}))
	if _, ok := f.open(a, out[0].b).Body.(*wire.Registered); !ok {
		t.Fatal("the right join token was refused")
	}
	if got := f.rejected("bad_token"); got != 1 {
		t.Fatalf("bad_token = %v", got)
	}
}

func TestReplayRejected(t *testing.T) {
	f := newFixture(t, nil)
	a := f.newPeer("203.0.113.5:40000")
	f.register(a, wire.Register{AllowAny: true})
	pkt := f.seal(a, &wire.Register{Cookie: a.cookie, AllowAny: true})
	if out := f.exchange(a.addr, pkt); len(out) != 1 {
		t.Fatal("first copy not answered")
	}
	if out := f.exchange(a.addr, pkt); len(out) != 0 {
		t.Fatal("replayed copy answered")
	}
	f.clock.Add(20 * time.Second)
	if out := f.exchange(a.addr, pkt); len(out) != 0 {
		t.Fatal("replayed copy answered 20 s later")
	}
	if got := f.rejected("replay"); got != 2 {
		t.Fatalf("replay = %v, want 2", got)
	}
}

func TestStaleTime(t *testing.T) {
	f := newFixture(t, nil)
	a := f.newPeer("203.0.113.5:40000")
	a.cookie = f.srv.cfg.Cookies.Make(a.addr)
	for _, skew := range []time.Duration{-31 * time.Second, 31 * time.Second} {
		m := wire.Message{Time: f.clock.Now().Add(skew).UnixMilli(), Body: &wire.Register{AllowAny: true, Cookie: a.cookie}}
		if out := f.exchange(a.addr, f.sealMessage(a, m)); len(out) != 0 {
			t.Fatalf("message %v off answered", skew)
		}
	}
	if got := f.rejected("stale_time"); got != 2 {
		t.Fatalf("stale_time = %v, want 2", got)
	}
	// 29 s off is inside the window.
	m := wire.Message{Time: f.clock.Now().Add(-29 * time.Second).UnixMilli(), Body: &wire.Register{AllowAny: true, Cookie: a.cookie}}
	if out := f.exchange(a.addr, f.sealMessage(a, m)); len(out) != 1 {
		t.Fatal("message 29 s old not answered")
	}
}

func TestWrongBoxKey(t *testing.T) {
	f := newFixture(t, nil)
	a := f.newPeer("203.0.113.5:40000")
	a.cookie = f.srv.cfg.Cookies.Make(a.addr) // all these prove the cookie
	other, _ := crypto.GenerateIdentity(nil)
	wrong, _ := a.id.SharedKey(other.ID()) // sealed to another server
	plain := wire.AppendMessage(nil, wire.Message{Time: f.clock.Now().UnixMilli(), Body: &wire.Register{Cookie: a.cookie}})
	pkt, _ := wire.SealRequest(nil, a.id.ID(), wrong, plain, &a.cookie)
	if out := f.exchange(a.addr, pkt); len(out) != 0 {
		t.Fatal("box for another key answered")
	}
	// A sender claiming someone else's key.
	pkt, _ = wire.SealRequest(nil, other.ID(), a.shared, plain, &a.cookie)
	if out := f.exchange(a.addr, pkt); len(out) != 0 {
		t.Fatal("frame with a forged sender key answered")
	}
	// A sender key that is not a curve point.
	var notPoint crypto.PeerID
	copy(notPoint[:], bytes.Repeat([]byte{0xff}, 32))
	pkt, _ = wire.SealRequest(nil, notPoint, a.shared, plain, &a.cookie)
	if out := f.exchange(a.addr, pkt); len(out) != 0 {
		t.Fatal("frame with an invalid sender key answered")
	}
	// A flipped bit in the box.
	pkt = f.seal(a, &wire.Register{Cookie: a.cookie})
	pkt[len(pkt)-1] ^= 1
	if out := f.exchange(a.addr, pkt); len(out) != 0 {
		t.Fatal("corrupted box answered")
	}
	if got := f.rejected("bad_box"); got != 4 {
		t.Fatalf("bad_box = %v, want 4", got)
	}
	for _, id := range []crypto.PeerID{a.id.ID(), other.ID(), notPoint} {
		if _, cached := f.srv.keys.Get(&id); cached {
			t.Fatalf("key %v that opened no box was cached", id)
		}
	}
}

func TestTruncatedVersionUnknown(t *testing.T) {
	f := newFixture(t, nil)
	a := f.newPeer("203.0.113.5:40000")
	a.cookie = f.srv.cfg.Cookies.Make(a.addr)
	pkt := f.seal(a, &wire.Register{})
	for _, n := range []int{0, 1, wire.HeaderLen, wire.SealedOverhead - 1} {
		if out := f.exchange(a.addr, pkt[:n]); len(out) != 0 {
			t.Fatalf("%d-byte prefix answered", n)
		}
	}
	if got := f.rejected("truncated"); got != 4 {
		t.Fatalf("truncated = %v, want 4", got)
	}
	bad := append([]byte(nil), pkt...)
	bad[1] = wire.Version + 1
	f.exchange(a.addr, bad)
	if got := f.rejected("bad_version"); got != 1 {
		t.Fatalf("bad_version = %v", got)
	}
	f.exchange(a.addr, wire.AppendData(nil, 1, []byte("x")))
	f.exchange(a.addr, f.seal(a, &wire.Probe{TxID: 1}))
	f.exchange(a.addr, f.seal(a, &wire.Registered{}))
	// A Sealed frame: requests before protocol version 3.
	f.exchange(a.addr, wire.SealFrame(nil, a.id.ID(), a.shared, wire.Message{Time: f.clock.Now().UnixMilli(), Body: &wire.Register{Cookie: a.cookie}}))
	if got := f.rejected("unknown_type"); got != 4 {
		t.Fatalf("unknown_type = %v, want 4", got)
	}
	f.exchange(a.addr, []byte{0x99, 1, 2, 3})
	f.exchange(a.addr, make([]byte, wire.MaxFrame+1)) // too large
	// A message of a known type with trailing garbage.
	m := wire.AppendMessage(nil, wire.Message{Time: f.clock.Now().UnixMilli(), Body: &wire.Register{}})
	garbage, _ := wire.SealRequest(nil, a.id.ID(), a.shared, append(m, 0), &a.cookie)
	f.exchange(a.addr, garbage)
	if got := f.rejected("malformed"); got != 3 {
		t.Fatalf("malformed = %v, want 3", got)
	}
}

func TestRateLimit(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.RateLimit = RateLimit{PerSecond: 1, Burst: 3} })
	a := f.newPeer("203.0.113.5:40000")
	other := netip.MustParseAddrPort("203.0.113.5:40001") // same host, other port
	answered := 0
	for i := range 6 {
		from := a.addr
		if i%2 == 1 {
			from = other
		}
		answered += len(f.exchange(from, f.seal(a, &wire.Register{})))
	}
	if answered != 3 {
		t.Fatalf("answered %d of 6 from one host with burst 3", answered)
	}
	if got := f.rejected("rate_limited"); got != 3 {
		t.Fatalf("rate_limited = %v", got)
	}
	if len(f.exchange(netip.MustParseAddrPort("203.0.113.6:1"), f.seal(a, &wire.Register{}))) != 1 {
		t.Fatal("another source was limited too")
	}
	f.clock.Add(time.Second)
	if len(f.exchange(a.addr, f.seal(a, &wire.Register{}))) != 1 {
		t.Fatal("bucket did not refill")
	}
	// IPv6 sources are limited per /64.
	answered = 0
	for i := range 5 {
		from := netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}), 1)
		answered += len(f.exchange(from, f.seal(a, &wire.Register{})))
	}
	if answered != 3 {
		t.Fatalf("answered %d of 5 from one /64 with burst 3", answered)
	}
}

func TestSTUN(t *testing.T) {
	f := newFixture(t, nil)
	for _, from := range []string{"203.0.113.5:40000", "[2001:db8::5]:40000"} {
		addr := netip.MustParseAddrPort(from)
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		out := f.exchange(addr, req.Raw)
		if len(out) != 1 || out[0].to != addr {
			t.Fatalf("%s: %d replies", from, len(out))
		}
		resp := new(stun.Message)
		if err := stun.Decode(out[0].b, resp); err != nil {
			t.Fatal(err)
		}
		if resp.Type != stun.BindingSuccess || resp.TransactionID != req.TransactionID {
			t.Fatalf("response %v", resp)
		}
		var xa stun.XORMappedAddress
		if err := xa.GetFrom(resp); err != nil {
			t.Fatal(err)
		}
		got, _ := netip.AddrFromSlice(xa.IP)
		if netip.AddrPortFrom(got.Unmap(), uint16(xa.Port)) != addr {
			t.Fatalf("mapped %v, want %v", xa, addr)
		}
		if len(out[0].b) > 44 || float64(len(out[0].b))/float64(len(req.Raw)) > 2.2 {
			t.Fatalf("STUN answer of %d bytes to %d: ratio above the documented bound", len(out[0].b), len(req.Raw))
		}
	}
	// Other STUN methods are not ours.
	alloc := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest))
	if out := f.exchange(netip.MustParseAddrPort("203.0.113.5:1"), alloc.Raw); len(out) != 0 {
		t.Fatal("answered a TURN allocate")
	}
	if got := value(f.srv.m.stun); got != 2 {
		t.Fatalf("stun answered = %v", got)
	}
}

// Without a valid cookie no message type, well formed or not, gets a reply
// larger than itself.
func TestNoAmplificationWithoutCookie(t *testing.T) {
	f := newFixture(t, nil)
	a := f.newPeer("203.0.113.5:40000")
	b := f.newPeer("198.51.100.9:50000")
	// A and B are registered, and A holds a cookie for its own address:
	// replies to a forged source must still stay small.
	f.register(a, wire.Register{AllowAny: true})
	f.register(b, wire.Register{AllowAny: true, Tickets: [][]byte{make([]byte, crypto.TicketSize)}})
	victim := netip.MustParseAddrPort("198.51.100.200:9")
	bodies := []wire.Body{
		&wire.Register{},
		&wire.Register{Cookie: a.cookie}, // valid for A's address, not the victim's
		&wire.Register{Candidates: []netip.AddrPort{victim}},
		&wire.Connect{Target: b.id.ID()},
		&wire.Connect{Cookie: a.cookie, Target: b.id.ID()},
		&wire.Connect{TargetAddr: b.id.ID().OverlayAddr()},
		&wire.Registered{Relays: []string{"x"}},
		&wire.Challenge{},
		&wire.ConnectReply{},
		&wire.Punch{},
		&wire.Error{},
		&wire.Probe{},
		&wire.ProbeReply{},
		&wire.PathUpdate{},
	}
	for _, body := range bodies {
		req := f.seal(a, body)
		for _, out := range f.exchange(victim, req) {
			if len(out.b) > len(req) {
				t.Errorf("%s without a valid cookie: %d-byte reply to a %d-byte request", body.Type(), len(out.b), len(req))
			}
			if out.to != victim {
				t.Errorf("%s without a valid cookie: reply to %v", body.Type(), out.to)
			}
		}
	}
}

// A registry that fails is reported to the peer and counted.
func TestRegistryUnavailable(t *testing.T) {
	var down failing
	f := newFixture(t, func(c *Config) { c.Registry = &down })
	a := f.newPeer("203.0.113.5:40000")
	out := f.exchange(a.addr, f.seal(a, &wire.Register{}))
	a.cookie = f.cookieOf(out)
	out = f.exchange(a.addr, f.seal(a, &wire.Register{Cookie: a.cookie}))
	if e, ok := f.open(a, out[0].b).Body.(*wire.Error); !ok || e.Code != wire.ErrCodeUnavailable {
		t.Fatal("registry failure not reported")
	}
	out = f.exchange(a.addr, f.seal(a, &wire.Connect{Cookie: a.cookie, Target: crypto.PeerID{1}}))
	if e, ok := f.open(a, out[0].b).Body.(*wire.Error); !ok || e.Code != wire.ErrCodeUnavailable {
		t.Fatal("registry failure not reported for connect")
	}
	if got := value(f.srv.m.registryErrs); got != 2 {
		t.Fatalf("registry errors = %v", got)
	}
	if f.srv.Health(context.Background()) == nil {
		t.Fatal("health passes with the registry down")
	}
}

// failing is a registry whose store is down.
type failing struct{}

func (*failing) Put(context.Context, discovery.Record, time.Duration) error {
	return discovery.ErrUnavailable
}
func (*failing) Get(context.Context, crypto.PeerID) (discovery.Record, error) {
	return discovery.Record{}, discovery.ErrUnavailable
}
func (*failing) GetByAddr(context.Context, netip.Addr) (discovery.Record, error) {
	return discovery.Record{}, discovery.ErrUnavailable
}
func (*failing) Delete(context.Context, crypto.PeerID) error { return discovery.ErrUnavailable }
func (*failing) Len(context.Context) (int, error)            { return 0, discovery.ErrUnavailable }
func (*failing) Ping(context.Context) error                  { return discovery.ErrUnavailable }
func (*failing) Close() error                                { return nil }

func TestConfigValidate(t *testing.T) {
	id, _ := crypto.GenerateIdentity(nil)
	jar := crypto.NewCookieJar(make([]byte, 32), nil)
	reg := discovery.NewMemory(nil)
	cases := map[string]Config{
		"no identity": {Registry: reg, Cookies: jar},
		"no registry": {Identity: id, Cookies: jar},
		"no cookies":  {Identity: id, Registry: reg},
		"refresh>ttl": {Identity: id, Registry: reg, Cookies: jar, TTL: time.Minute, Refresh: 2 * time.Minute},
		"huge ttl":    {Identity: id, Registry: reg, Cookies: jar, TTL: 100000 * time.Second},
		"big frame":   {Identity: id, Registry: reg, Cookies: jar, Relays: bigList()},
	}
	for name, c := range cases {
		if _, err := New(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", name, err)
		}
	}
	if _, err := New(Config{Identity: id, Registry: reg, Cookies: jar}); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
}

func bigList() []string {
	var l []string
	for range wire.MaxCandidates {
		l = append(l, string(bytes.Repeat([]byte{'r'}, 200)))
	}
	return l
}
