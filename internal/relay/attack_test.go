package relay

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/testutil/ci"
	"github.com/keymesh/keymesh/internal/wire"
)

// legitBind is an honest peer binding from src at now: the whole handshake
// the protocol asks for. It reports whether a ticket for src came back.
func legitBind(t testing.TB, w *worker, id *crypto.Identity, src netip.AddrPort, now time.Time) bool {
	t.Helper()
	reply := make([]byte, 0, wire.RelayBoundLen)
	act, out, _ := w.handle(wire.AppendRelayBind(nil, id, now, crypto.Cookie{}), src, now, now.UnixNano(), reply)
	if act != actChallenge {
		return false
	}
	c, err := wire.ParseRelayChallenge(out)
	if err != nil {
		return false
	}
	act, out, _ = w.handle(wire.AppendRelayBind(nil, id, now, c.Cookie), src, now, now.UnixNano(), reply)
	if act != actReply {
		return false
	}
	bd, err := wire.ParseRelayBound(out)
	return err == nil && bd.Observed == src
}

// TestPortRotationSharesOneBucket: one IPv4 address, or one IPv6 /64,
// rotating source ports (and host bits) gets one bucket, not one per port.
func TestPortRotationSharesOneBucket(t *testing.T) {
	f := newHandleFixture(t, RateLimit{Rate: 1, Burst: 5})
	pkt := make([]byte, len(f.send))
	count := func(srcs func(i int) netip.AddrPort) int {
		n := 0
		for i := range 100 {
			copy(pkt, f.send)
			if act, _, _ := f.w.handle(pkt, srcs(i), f.now, f.now.UnixNano(), f.reply); act == actForward {
				n++
			}
		}
		return n
	}
	if n := count(func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr("198.51.100.7"), uint16(10000+i))
	}); n != 5 {
		t.Errorf("one IPv4 address over 100 ports: %d forwarded, want the burst of 5", n)
	}
	if n := count(func(i int) netip.AddrPort {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 15: byte(i)})
		return netip.AddrPortFrom(a, uint16(20000+i))
	}); n != 5 {
		t.Errorf("one IPv6 /64 over 100 addresses and ports: %d forwarded, want the burst of 5", n)
	}
}

// TestForgedBindFloodDoesNotStarveBinds is item 4 of issue 10: a flood of
// forged binds from many spoofed addresses (30,000/s, well above a global
// bind budget of 2,000/s) while 100 honest peers bind; at least 99% of the
// honest binds must succeed.
func TestForgedBindFloodDoesNotStarveBinds(t *testing.T) {
	f := newHandleFixture(t, RateLimit{BindsPerSecond: 2000})
	rng := rand.New(rand.NewPCG(1, 2))
	attacker, _ := crypto.GenerateIdentity(nil)
	honest := make([]*crypto.Identity, 100)
	for i := range honest {
		honest[i], _ = crypto.GenerateIdentity(nil)
	}
	n := 0
	spoofed := func() netip.AddrPort { // random IPv4 addresses and IPv6 /64s
		n++
		if n%2 == 0 {
			var a [16]byte
			for i := range a {
				a[i] = byte(rng.Uint32())
			}
			return netip.AddrPortFrom(netip.AddrFrom16(a), uint16(rng.Uint32()))
		}
		var a [4]byte
		for i := range a {
			a[i] = byte(rng.Uint32())
		}
		return netip.AddrPortFrom(netip.AddrFrom4(a), uint16(rng.Uint32()))
	}
	// The attacker's own address earns it real cookies and binds, which it
	// replays from spoofed sources along with cookieless and made-up ones.
	own := netip.MustParseAddrPort("198.51.100.1:1")
	ownCookie := f.cookie(t, attacker, own, f.now)
	reply := make([]byte, 0, wire.RelayBoundLen)
	tried, ok := 0, 0
	for ms := range 2000 {
		now := f.now.Add(time.Duration(ms) * time.Millisecond)
		var made crypto.Cookie
		for i := range made {
			made[i] = byte(rng.Uint32())
		}
		forged := [][]byte{
			wire.AppendRelayBind(nil, attacker, now, crypto.Cookie{}),
			wire.AppendRelayBind(nil, attacker, now, made),
			wire.AppendRelayBind(nil, attacker, now, ownCookie),
		}
		for i := range 30 {
			f.w.handle(bytes.Clone(forged[i%len(forged)]), spoofed(), now, now.UnixNano(), reply)
		}
		if ms%10 == 0 {
			i := (ms / 10) % len(honest)
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 40000)
			tried++
			if legitBind(t, f.w, honest[i], src, now) {
				ok++
			}
		}
	}
	if ok*100 < tried*99 {
		t.Fatalf("under a forged-bind flood %d of %d honest binds succeeded, want >= 99%%", ok, tried)
	}
	// The flood never reached a signature check.
	if d := f.w.st.dropped[reasonBadSignature]; d != 0 {
		t.Fatalf("%d forged binds had their signature checked", d)
	}
}

// TestReplayedBindFromAnotherAddress is item 10 of issue 10: a bind
// captured on the wire and replayed from another address must not earn a
// ticket for that address, nor cost a signature check.
func TestReplayedBindFromAnotherAddress(t *testing.T) {
	f := newHandleFixture(t, RateLimit{BindsPerSecond: 1})
	victim := netip.MustParseAddrPort("203.0.113.5:4000")
	attacker := netip.MustParseAddrPort("198.51.100.66:5000")
	captured := wire.AppendRelayBind(nil, f.id, f.now, f.cookie(t, f.id, victim, f.now))
	for i := range 50 {
		src := attacker
		if i > 0 {
			src = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), uint16(1000+i))
		}
		act, out, _ := f.w.handle(bytes.Clone(captured), src, f.now, f.now.UnixNano(), f.reply)
		if act == actReply && out[0] == wire.TypeRelayBound {
			t.Fatalf("a bind replayed from %v earned a ticket", src)
		}
	}
	// The replays spent no signature budget: the victim still binds.
	if !legitBind(t, f.w, f.id, victim, f.now) {
		t.Fatal("the honest peer could not bind after replays of its bind")
	}
}

// TestNoUnprovenReplyLargerThanRequest measures, over IPv4 and IPv6
// loopback and every serve loop, the answer to every kind of datagram a
// stranger can send before proving its address: no answer may be larger
// than its request, none may carry a ticket, and a forward is never larger
// than the RelaySend it came from.
func TestNoUnprovenReplyLargerThanRequest(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		ci.Skipf(t, "no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	for _, family := range []struct{ name, bind string }{{"ipv4", "127.0.0.1:0"}, {"ipv6", "[::1]:0"}} {
		for _, mode := range serveModes {
			t.Run(family.name+"/"+mode, func(t *testing.T) {
				keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)
				// Limits out of the way: every probe is answered if it can be.
				r := startRelay(t, Config{Keys: keys, RateLimit: RateLimit{ChallengeRate: 1e6, ChallengeBurst: 1e6}}, mode, family.bind)
				stranger, sink := newPeer(t, family.bind), newPeer(t, family.bind)
				sinkTicket := sink.bind(t, r.addr).Ticket
				for name, req := range unprovenProbes(t, stranger, sink, keys, sinkTicket) {
					for _, got := range exchange(t, stranger, r.addr, req) {
						if len(got) > len(req) {
							t.Errorf("%s: answer of %d bytes to a request of %d", name, len(got), len(req))
						}
						if len(got) > 0 && got[0] == wire.TypeRelayBound {
							t.Errorf("%s: answered with a ticket before the address was proven", name)
						}
					}
					if len(req) > 0 && req[0] == wire.TypeRelaySend {
						if got := sink.recv(t, 20*time.Millisecond); got != nil && len(got) > len(req) {
							t.Errorf("%s: forwarded %d bytes for a request of %d", name, len(got), len(req))
						}
					}
				}
			})
		}
	}
}

// unprovenProbes are the datagrams a stranger (p) can send: every frame
// type and version at several sizes, and the relay's own frames made up,
// replayed or stale.
func unprovenProbes(t *testing.T, p, sink *peer, keys *crypto.TicketKeys, sinkTicket []byte) map[string][]byte {
	now := time.Now()
	other := newPeer(t, "127.0.0.1:0")
	elsewhere := wire.AppendRelayBind(nil, other.id, now, crypto.Cookie{1, 2, 3})
	probes := map[string][]byte{
		"empty":                    {},
		"junk":                     []byte("hello, not a frame"),
		"stun binding":             {0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"cookieless bind":          wire.AppendRelayBind(nil, p.id, now, crypto.Cookie{}),
		"bind, made-up cookie":     wire.AppendRelayBind(nil, p.id, now, crypto.Cookie{9, 9, 9}),
		"bind replayed from other": elsewhere,
		"stale bind":               wire.AppendRelayBind(nil, p.id, now.Add(-time.Hour), crypto.Cookie{}),
		"version-1 bind":           append([]byte{wire.TypeRelayBind, wire.Version}, elsewhere[2:]...),
		"relay-send, forged":       wire.AppendRelaySend(nil, make([]byte, crypto.TicketSize), 1, []byte("x")),
		"relay-send, to sink":      wire.AppendRelaySend(nil, sinkTicket, 1, []byte("x")),
		"challenge":                wire.AppendRelayChallenge(nil, wire.RelayChallenge{}),
		"bound":                    wire.AppendRelayBound(nil, wire.RelayBound{Ticket: sinkTicket, Observed: netip.MustParseAddrPort("127.0.0.1:1")}),
	}
	for typ := byte(0x20); typ <= 0x2f; typ++ {
		for _, v := range []byte{wire.Version, wire.BindVersion} {
			for _, n := range []int{2, wire.RelayChallengeLen, wire.RelayBindLen - 1, wire.RelayBindLen, 1200} {
				b := make([]byte, n)
				b[0], b[1] = typ, v
				probes[fmt.Sprintf("type %#x v%d, %d bytes", typ, v, n)] = b
			}
		}
	}
	return probes
}

// exchange sends req from p to the relay, then a cookieless bind as a
// marker, and returns every answer that came before the marker's challenge.
func exchange(t *testing.T, p *peer, relay net.Addr, req []byte) [][]byte {
	t.Helper()
	marker := wire.AppendRelayBind(nil, p.id, time.Now(), crypto.Cookie{})
	m, _ := wire.PeekRelayBind(marker)
	p.send(t, relay, req)
	p.send(t, relay, marker)
	var got [][]byte
	for {
		b := p.recv(t, 2*time.Second)
		if b == nil {
			t.Fatal("no challenge to the marker bind")
		}
		if c, err := wire.ParseRelayChallenge(b); err == nil && c.Echo == m.Echo {
			// With several serve goroutines the answer to req may come
			// after the marker's: take what arrives shortly after too,
			// so it is not counted against the next request.
			for {
				late := p.recv(t, 15*time.Millisecond)
				if late == nil {
					return got
				}
				got = append(got, bytes.Clone(late))
			}
		}
		got = append(got, bytes.Clone(b))
	}
}

// TestSpoofedSendFloodKeepsVictimsBudget: an attacker floods RelaySends
// with the source address of a victim peer, carrying made-up tickets and a
// real ticket of its own (it bound from its address like anyone can), at
// 100 times the per-source rate. The victim's own sends to its peer, within
// the rate, must all be forwarded: a frame that does not open spends
// nobody's budget, and one that does spends only the budget of its source
// towards its ticket's address.
func TestSpoofedSendFloodKeepsVictimsBudget(t *testing.T) {
	const rate = 100
	f := newHandleFixture(t, RateLimit{Rate: rate, Burst: rate})
	victim := netip.MustParseAddrPort("203.0.113.5:4000")
	own := netip.MustParseAddrPort("198.51.100.66:5000")
	ownTicket := f.keys.Seal(nil, crypto.Ticket{Addr: own, ID: f.id.ID(), Expiry: f.now.Add(time.Minute)})
	made := bytes.Clone(f.send)
	made[wire.HeaderLen+crypto.TicketSize-1] ^= 1 // breaks the tag
	flood := [][]byte{made, wire.AppendRelaySend(nil, ownTicket, 1, []byte("spoofed"))}
	pkt := make([]byte, len(f.send))
	sent, forwarded := 0, 0
	for ms := range 2000 {
		now := f.now.Add(time.Duration(ms) * time.Millisecond)
		for i := range rate / 10 { // per ms: 100 x the rate
			b := bytes.Clone(flood[i%2])
			f.w.handle(b, victim, now, now.UnixNano(), f.reply)
		}
		if ms%20 == 0 { // 50/s, within the rate
			copy(pkt, f.send)
			sent++
			if act, _, dst := f.w.handle(pkt, victim, now, now.UnixNano(), f.reply); act == actForward && dst == f.dst {
				forwarded++
			}
		}
	}
	if forwarded != sent {
		t.Fatalf("under a spoofed flood from its address the victim got %d of %d sends forwarded", forwarded, sent)
	}
}
