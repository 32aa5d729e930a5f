package rendezvous

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// TestSpoofedFloodKeepsPeerServed: a stranger who knows a registered peer's
// public address floods the rendezvous from it (other ports and the very
// same one) at four times the per-source rate: cookieless Requests under a
// fresh key, STUN Binding requests and junk, for three minutes, across
// three cookie periods. The peer keeps its keepalive every second and its
// Register every 20 s. Every one of them must be answered: a datagram that
// does not prove its source's cookie spends nothing of the budget that
// proven requests draw on (else 50 datagrams a second, about 40 kbit/s,
// silence any peer, and push a node with a stream relay into the TLS
// tunnel: its requests go unanswered). And the peer must never need a
// CookieReply, which the flood competes for: an active peer gets each new
// period's cookie through its proven requests. What the flood reflects to
// the peer's address stays within the per-source burst and rate.
func TestSpoofedFloodKeepsPeerServed(t *testing.T) {
	const (
		rate    = 50
		burst   = 100
		seconds = 3 * int(crypto.CookieWindow/time.Second)
	)
	f := newFixture(t, func(c *Config) { c.RateLimit = RateLimit{PerSecond: rate, Burst: burst} })
	victim := f.newPeer("203.0.113.5:40000")
	f.register(victim, wire.Register{AllowAny: true})
	stranger := f.newPeer("192.0.2.1:1")
	bind := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw

	// ask sends one request of the victim's client, following a Challenge
	// or a CookieReply as rzclient does, and reports whether it was
	// answered and whether it took a CookieReply.
	ask := func(body func(c crypto.Cookie) wire.Body) (answered, cookieReply bool) {
		for range 3 {
			out := f.exchange(victim.addr, f.seal(victim, body(victim.cookie)))
			if len(out) != 1 || out[0].to != victim.addr {
				return false, cookieReply
			}
			if c, _, err := wire.ParseCookieReply(out[0].b); err == nil {
				victim.cookie, cookieReply = c, true
				continue
			}
			switch m := f.open(victim, out[0].b).Body.(type) {
			case *wire.Challenge:
				victim.cookie = m.Cookie
			case *wire.KeepaliveAck, *wire.Registered:
				return true, cookieReply
			default:
				t.Fatalf("victim got %T", m)
			}
		}
		return false, cookieReply
	}

	reflected := 0
	for s := range seconds {
		for step := range 10 { // 100 ms steps
			for i := range 4 * rate / 10 {
				from := victim.addr
				if i%3 == 1 { // another port of the victim's address
					from = netip.AddrPortFrom(victim.addr.Addr(), uint16(1024+i))
				}
				var pkt []byte
				switch i % 4 {
				case 0, 1:
					pkt = f.seal(stranger, &wire.Keepalive{})
				case 2:
					pkt = bind
				case 3:
					pkt = []byte{wire.TypeRequest, 0xff, 0xff}
				}
				for _, o := range f.exchange(from, pkt) {
					if o.to.Addr() == victim.addr.Addr() {
						reflected++
					}
				}
			}
			if step == 5 {
				ok, cr := ask(func(c crypto.Cookie) wire.Body { return &wire.Keepalive{Cookie: c} })
				if !ok || cr {
					t.Fatalf("second %d: the victim's keepalive answered %v, took a CookieReply %v (rejected: rate_limited %v, no_cookie %v)",
						s, ok, cr, f.rejected("rate_limited"), f.rejected("no_cookie"))
				}
				if s%20 == 10 {
					ok, cr := ask(func(c crypto.Cookie) wire.Body { return &wire.Register{AllowAny: true, Cookie: c} })
					if !ok || cr {
						t.Fatalf("second %d: the victim's Register answered %v, took a CookieReply %v", s, ok, cr)
					}
				}
			}
			f.clock.Add(100 * time.Millisecond)
		}
	}
	if limit := burst + rate*seconds + DefaultSTUNBurst + DefaultSTUNRate*seconds; reflected > limit {
		t.Fatalf("the flood reflected %d datagrams to the victim's address, want at most %d (its cookie and STUN buckets)", reflected, limit)
	}
}

// TestPreviousCookieRenewedByChallenge: in the period after its cookie was
// made, a Keepalive or Register carrying it gets a Challenge with this
// period's cookie (no larger than the request), and the request sent again
// with it is served; a Connect carrying it is served at once.
func TestPreviousCookieRenewedByChallenge(t *testing.T) {
	f := newFixture(t, nil)
	a, b := f.newPeer("203.0.113.5:40000"), f.newPeer("198.51.100.9:50000")
	f.register(a, wire.Register{AllowAny: true})
	f.register(b, wire.Register{AllowAny: true})
	old := a.cookie
	f.clock.Add(crypto.CookieWindow)
	for _, body := range []wire.Body{&wire.Keepalive{Cookie: old}, &wire.Register{AllowAny: true, Cookie: old}} {
		req := f.seal(a, body)
		out := f.exchange(a.addr, req)
		if len(out) != 1 || len(out[0].b) > len(req) {
			t.Fatalf("%T with the previous period's cookie: %d replies, want one no larger than the request", body, len(out))
		}
		c, ok := f.open(a, out[0].b).Body.(*wire.Challenge)
		if !ok || c.Cookie == old || !f.srv.cfg.Cookies.Check(a.addr, c.Cookie) {
			t.Fatalf("%T with the previous period's cookie: got %+v, want a Challenge with this period's cookie", body, f.open(a, out[0].b).Body)
		}
		a.cookie = c.Cookie
	}
	if m := f.register(a, wire.Register{AllowAny: true}); m == nil {
		t.Fatal("not registered with the renewed cookie")
	}
	out := f.exchange(a.addr, f.seal(a, &wire.Connect{Cookie: old, TxID: 1, Target: b.id.ID()}))
	if len(out) != 2 {
		t.Fatalf("a Connect with the previous period's cookie: %d replies, want the Punch and the ConnectReply", len(out))
	}
}
