package relay

import (
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// step runs one datagram through f's handler at now.
func (f *handleFixture) step(pkt []byte, src netip.AddrPort, now time.Time) (action, []byte) {
	act, out, _ := f.w.handle(pkt, src, now, now.UnixNano(), f.reply)
	return act, out
}

// TestBoundCarriesNextCookie: a bound peer re-binds in one round trip with
// the cookie from its last RelayBound, until that cookie ages out (one to
// two crypto.CookieWindow), when it is challenged again.
func TestBoundCarriesNextCookie(t *testing.T) {
	f := newHandleFixture(t, RateLimit{})
	now := f.now
	act, out := f.step(f.bind, testSrc, now)
	if act != actReply {
		t.Fatalf("bind with its cookie: action %v", act)
	}
	bd, _ := wire.ParseRelayBound(out)
	for range 5 { // re-binds every 20 s on the cookie of the last answer
		now = now.Add(RebindInterval)
		act, out = f.step(wire.AppendRelayBind(nil, f.id, now, bd.Cookie), testSrc, now)
		if act != actReply {
			t.Fatalf("re-bind with the last RelayBound's cookie: action %v, want a ticket", act)
		}
		bd, _ = wire.ParseRelayBound(out)
	}
	now = now.Add(2 * crypto.CookieWindow)
	if act, _ = f.step(wire.AppendRelayBind(nil, f.id, now, bd.Cookie), testSrc, now); act != actChallenge {
		t.Fatalf("bind with a cookie two windows old: action %v, want a challenge", act)
	}
	// The cookie is for one address and port: the same peer behind a
	// rebound NAT port is challenged.
	moved := netip.AddrPortFrom(testSrc.Addr(), testSrc.Port()+1)
	c := f.cookie(t, f.id, testSrc, now)
	if act, _ = f.step(wire.AppendRelayBind(nil, f.id, now, c), moved, now); act != actChallenge {
		t.Fatalf("a cookie used from another port: action %v, want a challenge", act)
	}
}

// TestSpoofedChallengeFloodLeavesProvenBindsAlone: a spoofer sending
// cookieless binds as the victim's address uses up that address's
// challenges (so the reflection stays bounded), but the victim, holding a
// cookie, still binds; and the challenges stop at the source's burst.
func TestSpoofedChallengeFloodLeavesProvenBindsAlone(t *testing.T) {
	f := newHandleFixture(t, RateLimit{ChallengeRate: 1, ChallengeBurst: 4})
	victim := netip.MustParseAddrPort("203.0.113.9:4000")
	cookie := f.cookie(t, f.id, victim, f.now)
	attacker, _ := crypto.GenerateIdentity(nil)
	challenged := 1
	for port := range 100 {
		src := netip.AddrPortFrom(victim.Addr(), uint16(port+1))
		if act, _ := f.step(wire.AppendRelayBind(nil, attacker, f.now, crypto.Cookie{}), src, f.now); act == actChallenge {
			challenged++
		}
	}
	if challenged != 4 {
		t.Fatalf("one address over 100 ports got %d challenges, want its burst of 4", challenged)
	}
	if f.w.st.dropped[reasonChallengeLimited] != 97 {
		t.Fatalf("challenge_limited drops %d, want 97", f.w.st.dropped[reasonChallengeLimited])
	}
	if act, _ := f.step(wire.AppendRelayBind(nil, f.id, f.now, cookie), victim, f.now); act != actReply {
		t.Fatalf("the victim's bind with its cookie: action %v, want a ticket", act)
	}
}

// TestProvenBindsLimitedPerAddress: a real address (it holds cookies) that
// sends many signed binds over many ports is held to its bind rate, and
// other addresses keep binding; only the binds let through cost a
// signature check.
func TestProvenBindsLimitedPerAddress(t *testing.T) {
	f := newHandleFixture(t, RateLimit{BindRate: 1, BindBurst: 3, ChallengeRate: 1000, ChallengeBurst: 1000})
	bound := 0
	for port := range 20 {
		src := netip.AddrPortFrom(netip.MustParseAddr("198.51.100.3"), uint16(port+1))
		c := f.cookie(t, f.id, src, f.now)
		if act, _ := f.step(wire.AppendRelayBind(nil, f.id, f.now, c), src, f.now); act == actReply {
			bound++
		}
	}
	if bound != 3 || f.w.st.dropped[reasonBindLimited] != 17 {
		t.Fatalf("%d binds answered, %d bind_limited; want 3 and 17", bound, f.w.st.dropped[reasonBindLimited])
	}
	if !legitBind(t, f.w, f.id, netip.MustParseAddrPort("[2001:db8:9::1]:7"), f.now) {
		t.Fatal("another source could not bind")
	}
}

func TestEveryDropReasonHasAName(t *testing.T) {
	seen := map[string]bool{}
	for r := range numReasons {
		if n := r.String(); n == "" || seen[n] {
			t.Fatalf("reason %d has name %q (empty or taken)", r, n)
		}
		seen[r.String()] = true
	}
}
