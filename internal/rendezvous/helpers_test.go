package rendezvous

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/testutil/testclock"
	"github.com/keymesh/keymesh/internal/wire"
)

// clock is a settable test clock.
type clock = testclock.Clock

type fixture struct {
	t     testing.TB
	srv   *Server
	reg   discovery.Registry
	prom  *prometheus.Registry
	clock *clock
	sc    *scratch
}

func newFixture(t testing.TB, mod func(*Config)) *fixture {
	t.Helper()
	clk := testclock.New(time.Unix(1_760_000_000, 0))
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := discovery.NewMemory(clk.Now)
	prom := prometheus.NewRegistry()
	cfg := Config{
		Identity:   id,
		Registry:   reg,
		Cookies:    crypto.NewCookieJar([]byte("0123456789abcdef0123456789abcdef"), clk.Now),
		Relays:     []string{"198.51.100.7:3479"},
		TURNSecret: []byte("turn-secret"),
		TURNURIs:   []string{"turn:198.51.100.7:3478"},
		Instance:   "test-1",
		Registerer: prom,
		Now:        clk.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, srv: srv, reg: reg, prom: prom, clock: clk, sc: newScratch()}
}

// peer is a test client speaking the protocol by hand.
type peer struct {
	id     *crypto.Identity
	addr   netip.AddrPort
	shared *[32]byte // with the fixture's server
	cookie crypto.Cookie
	// lastRegister is the send time (Unix ms) of p's last Register: each
	// is stamped later than the one before, as a real peer's clock does
	// (the registry refuses a Register not newer than the stored one).
	lastRegister int64
}

// registerStamp returns the send time of p's next Register: the clock, or
// a millisecond after p's last Register when the test clock stood still.
func (f *fixture) registerStamp(p *peer) time.Time {
	ms := max(f.clock.Now().UnixMilli(), p.lastRegister+1)
	p.lastRegister = ms
	return time.UnixMilli(ms)
}

func (f *fixture) newPeer(addr string) *peer {
	f.t.Helper()
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		f.t.Fatal(err)
	}
	k, err := id.SharedKey(f.srv.ID())
	if err != nil {
		f.t.Fatal(err)
	}
	return &peer{id: id, addr: netip.MustParseAddrPort(addr), shared: k}
}

// seal makes a Request from p carrying body, whose nonce proves the cookie
// in body (Register, Connect), as the client does, else p's.
func (f *fixture) seal(p *peer, body wire.Body) []byte {
	cookie := p.cookie
	switch b := body.(type) {
	case *wire.Register:
		cookie = b.Cookie
	case *wire.Connect:
		cookie = b.Cookie
	}
	stamp := f.clock.Now().UnixMilli()
	if _, ok := body.(*wire.Register); ok {
		stamp = f.registerStamp(p).UnixMilli()
	}
	plain := wire.AppendMessage(nil, wire.Message{Time: stamp, Body: body})
	out, _ := wire.SealRequest(nil, p.id.ID(), p.shared, plain, &cookie)
	return out
}

// sealMessage makes a Request from p carrying m, proving p's cookie.
func (f *fixture) sealMessage(p *peer, m wire.Message) []byte {
	out, _ := wire.SealRequest(nil, p.id.ID(), p.shared, wire.AppendMessage(nil, m), &p.cookie)
	return out
}

// cookieOf returns the cookie of a CookieReply, failing the test on any
// other reply.
func (f *fixture) cookieOf(out []outPacket) crypto.Cookie {
	f.t.Helper()
	if len(out) != 1 {
		f.t.Fatalf("%d replies, want one CookieReply", len(out))
	}
	c, _, err := wire.ParseCookieReply(out[0].b)
	if err != nil {
		f.t.Fatalf("reply is not a CookieReply: %v", err)
	}
	return c
}

// exchange hands pkt from p to the server and returns copies of the replies.
func (f *fixture) exchange(from netip.AddrPort, pkt []byte) []outPacket {
	out := f.srv.handle(context.Background(), f.sc, from, pkt)
	cp := make([]outPacket, len(out))
	for i, o := range out {
		cp[i] = outPacket{to: o.to, b: append([]byte(nil), o.b...)}
	}
	return cp
}

// open decodes a reply sealed to p.
func (f *fixture) open(p *peer, b []byte) wire.Message {
	f.t.Helper()
	s, err := wire.ParseSealed(b)
	if err != nil {
		f.t.Fatalf("reply is not a sealed frame: %v", err)
	}
	if s.Sender != f.srv.ID() {
		f.t.Fatalf("reply sealed by %s, want the server", s.Sender.Short())
	}
	m, err := s.Open(p.shared)
	if err != nil {
		f.t.Fatalf("open reply: %v", err)
	}
	return m
}

// register runs a full registration for p (cookie reply, then register).
func (f *fixture) register(p *peer, reg wire.Register) *wire.Registered {
	f.t.Helper()
	for range 2 {
		reg.Cookie = p.cookie
		out := f.exchange(p.addr, f.seal(p, &reg))
		if len(out) != 1 {
			f.t.Fatalf("register: %d replies, want 1", len(out))
		}
		if c, _, err := wire.ParseCookieReply(out[0].b); err == nil {
			p.cookie = c
			continue
		}
		switch m := f.open(p, out[0].b).Body.(type) {
		case *wire.Challenge:
			p.cookie = m.Cookie
		case *wire.Registered:
			return m
		default:
			f.t.Fatalf("register: got %T", m)
		}
	}
	f.t.Fatal("register: challenged twice")
	return nil
}

func (f *fixture) rejected(reason string) float64 {
	return value(f.srv.m.rejected[reasonIndex(reason)])
}

func reasonIndex(name string) reason {
	for r := range numReasons {
		if r.String() == name {
			return r
		}
	}
	panic("no reason " + name)
}

// value reads a counter or gauge.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
