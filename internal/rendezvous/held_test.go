package rendezvous

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/mesh"
	"github.com/keymesh/keymesh/internal/wire"
)

// registerReplies runs a registration for p (a cookie round first when
// needed) and returns every reply to the Register that was accepted.
func (f *fixture) registerReplies(p *peer, reg wire.Register) []outPacket {
	f.t.Helper()
	for range 2 {
		reg.Cookie = p.cookie
		out := f.exchange(p.addr, f.seal(p, &reg))
		if len(out) == 0 {
			f.t.Fatal("register: no reply")
		}
		if c, _, err := wire.ParseCookieReply(out[0].b); err == nil {
			p.cookie = c
			continue
		}
		switch m := f.open(p, out[0].b).Body.(type) {
		case *wire.Challenge:
			p.cookie = m.Cookie
		case *wire.Registered:
			return out
		default:
			f.t.Fatalf("register: got %T", m)
		}
	}
	f.t.Fatal("register: challenged twice")
	return nil
}

// movedFixture is a mesh of this instance (X) and a live instance Y, with
// A and B registered and B's record homed on Y.
func movedFixture(t *testing.T) (f *fixture, a, b *peer, y <-chan meshDelivery) {
	t.Helper()
	key, err := mesh.NewKey([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	var yn *mesh.Node
	f = newFixture(t, func(c *Config) {
		x, _ := startMeshNode(t, key, c.Now)
		yn, y = startMeshNode(t, key, c.Now)
		c.Mesh, c.MeshAddr = x, x.Addr()
	})
	a = f.newPeer("203.0.113.5:40000")
	b = f.newPeer("198.51.100.9:50000")
	f.register(a, wire.Register{AllowAny: true})
	f.register(b, wire.Register{AllowAny: true})
	rec, err := f.reg.Get(context.Background(), b.id.ID())
	if err != nil {
		t.Fatal(err)
	}
	rec.Home = yn.Addr()
	rec.Sent = f.registerStamp(b) // the Register Y took
	if err := f.reg.Put(context.Background(), rec, time.Minute); err != nil {
		t.Fatal(err)
	}
	return f, a, b, y
}

// connectVia has A connect to B while B is homed on Y: the Punch goes only
// through Y, and A gets its reply.
func connectVia(t *testing.T, f *fixture, a, b *peer, y <-chan meshDelivery, tx uint64) {
	t.Helper()
	out := f.exchange(a.addr, f.seal(a, &wire.Connect{Cookie: a.cookie, TxID: tx, Target: b.id.ID()}))
	if len(out) != 1 || out[0].to != a.addr {
		t.Fatalf("B homed on a live Y: replies %v, want only the reply to A", out)
	}
	select {
	case <-y:
	case <-time.After(10 * time.Second):
		t.Fatal("Y got no punch over the mesh")
	}
}

// punchesIn returns the TxIDs of the Punches among replies to p's
// Register, all of which must go to p's address.
func punchesIn(t *testing.T, f *fixture, p *peer, out []outPacket) []uint64 {
	t.Helper()
	var txs []uint64
	for _, o := range out[1:] {
		if o.to != p.addr {
			t.Fatalf("a held punch went to %v, want the Register's source %v", o.to, p.addr)
		}
		pu, ok := f.open(p, o.b).Body.(*wire.Punch)
		if !ok {
			t.Fatalf("reply after Registered is %T, want a Punch", f.open(p, o.b).Body)
		}
		txs = append(txs, pu.TxID)
	}
	return txs
}

// TestHeldPunchReachesMovedPeer: A connects to B while B's home is Y, an
// instance that (unknown to X yet) has just died with the Punch. When B's
// keepalive lands on X and B registers here, within heldFor, the Punch
// goes out with B's Registered, to the address the Register came from;
// once only.
func TestHeldPunchReachesMovedPeer(t *testing.T) {
	f, a, b, y := movedFixture(t)
	connectVia(t, f, a, b, y, 7)
	f.clock.Add(heldFor - 100*time.Millisecond)
	b.addr = netip.MustParseAddrPort("198.51.100.9:50001") // the front door's new flow
	out := f.registerReplies(b, wire.Register{AllowAny: true})
	if txs := punchesIn(t, f, b, out); len(txs) != 1 || txs[0] != 7 {
		t.Fatalf("B's Register got punches %v, want A's (7)", txs)
	}
	if p := f.open(b, out[1].b).Body.(*wire.Punch); p.Peer.ID != a.id.ID() {
		t.Fatalf("the held Punch introduces %s, want A", p.Peer.ID.Short())
	}
	if txs := punchesIn(t, f, b, f.registerReplies(b, wire.Register{AllowAny: true})); len(txs) != 0 {
		t.Fatalf("B's second Register got punches %v again", txs)
	}
}

// TestHeldPunchExpires: a copy older than heldFor stays behind; a peer's
// Register here takes only its own copies.
func TestHeldPunchExpires(t *testing.T) {
	f, a, b, y := movedFixture(t)
	connectVia(t, f, a, b, y, 8)
	c := f.newPeer("203.0.113.77:1234")
	if txs := punchesIn(t, f, c, f.registerReplies(c, wire.Register{AllowAny: true})); len(txs) != 0 {
		t.Fatalf("a stranger's Register got B's punches %v", txs)
	}
	f.clock.Add(heldFor)
	if txs := punchesIn(t, f, b, f.registerReplies(b, wire.Register{AllowAny: true})); len(txs) != 0 {
		t.Fatalf("B's Register %s after the Connect got punches %v, want none", heldFor, txs)
	}
}

// TestHeldPunchSpoofedRegister: a Register sealed by B but sent from
// another address (spoofed, or replayed from elsewhere) without that
// address's cookie gets only the Challenge; the copy stays for B.
func TestHeldPunchSpoofedRegister(t *testing.T) {
	f, a, b, y := movedFixture(t)
	connectVia(t, f, a, b, y, 9)
	victim := netip.MustParseAddrPort("192.0.2.50:9999")
	out := f.exchange(victim, f.seal(b, &wire.Register{Cookie: b.cookie, AllowAny: true}))
	if len(out) != 1 {
		t.Fatalf("a Register from %v without its cookie: %d replies, want the cookie reply alone", victim, len(out))
	}
	if _, _, err := wire.ParseCookieReply(out[0].b); err != nil {
		t.Fatalf("a Register from %v without its cookie: %v, want a CookieReply", victim, err)
	}
	if txs := punchesIn(t, f, b, f.registerReplies(b, wire.Register{AllowAny: true})); len(txs) != 1 || txs[0] != 9 {
		t.Fatalf("B's own Register then got %v, want the held punch 9", txs)
	}
}

// TestHeldPunchesBounded: however many Punches go to homes elsewhere, the
// table holds at most its max, at most perPeer per target (the newest),
// and evicts the oldest first.
func TestHeldPunchesBounded(t *testing.T) {
	h := newHeldPunches(8, 2, time.Second)
	now := time.Unix(1_760_000_000, 0)
	id := func(i int) crypto.PeerID { var p crypto.PeerID; p[0], p[1] = byte(i), byte(i>>8); return p }
	for i := range 3 {
		h.hold(id(0), []byte{byte(i)}, now)
	}
	if got := h.take(id(0), now); len(got) != 2 || got[0][0] != 1 || got[1][0] != 2 {
		t.Fatalf("per-peer bound 2: took %v, want the newest two", got)
	}
	for i := range 1000 {
		h.hold(id(i), make([]byte, 100), now)
		if n := h.len(); n > 8 {
			t.Fatalf("after %d holds: %d copies, want at most 8", i+1, n)
		}
	}
	if got := h.take(id(0), now); got != nil {
		t.Fatalf("the oldest target's copy survived 1000 newer ones: %v", got)
	}
	if got := h.take(id(999), now); len(got) != 1 {
		t.Fatalf("the newest target's copy: %d, want 1", len(got))
	}
	if got := h.take(id(998), now.Add(time.Second)); got != nil {
		t.Fatalf("a copy held for its ttl was taken: %v", got)
	}
}
