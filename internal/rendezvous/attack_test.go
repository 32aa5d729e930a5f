package rendezvous

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// spoofed returns the i-th address of a spoofed flood (198.18.0.0/15, the
// benchmarking range; the frames never leave the process).
func spoofed(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18 + byte(i>>16&1), byte(i >> 8), byte(i)}), uint16(1024+i%60000))
}

// TestSpoofedFloodThenRegister is issue 10 item 3: sealed, cookieless frames
// from spoofed sources used to be written into the replay cache before the
// cookie was checked, and a full cache refused every message, so about
// 15 Mbit/s stopped all registrations. Now a cookieless frame gets its
// CookieReply and leaves nothing behind.
func TestSpoofedFloodThenRegister(t *testing.T) {
	fx := newFixture(t, func(c *Config) {
		c.RateLimit.PerSecond = -1
		c.ReplayCache = 1024
	})
	attacker := fx.newPeer("192.0.2.1:1")
	for i := range 8 * 1024 {
		// One fresh nonce each; the attacker's key opens the box.
		fx.exchange(spoofed(i), fx.seal(attacker, &wire.Register{AllowAny: true}))
		if i%512 == 0 {
			fx.clock.Add(time.Second) // the key-miss budget refills
		}
	}
	if n := fx.srv.replay.Len(); n != 0 {
		t.Errorf("replay cache holds %d pairs from cookieless frames", n)
	}
	legit := fx.newPeer("203.0.113.5:40000")
	fx.register(legit, wire.Register{AllowAny: true})
}

// TestReplayCachePressure is issue 10 items 3 and 10 with real addresses:
// an attacker who owns many addresses (so holds valid cookies) floods
// distinct frames stamped anywhere in the clock window, far beyond the
// replay cache. Fresh registrations still succeed (the cache evicts; the
// old one refused everything once full) and a replay of a registration
// captured before the flood is refused all the same.
func TestReplayCachePressure(t *testing.T) {
	fx := newFixture(t, func(c *Config) {
		c.RateLimit.PerSecond = -1
		c.ReplayCache = 1024
	})
	legit := fx.newPeer("203.0.113.5:40000")
	fx.register(legit, wire.Register{AllowAny: true})
	captured := fx.seal(legit, &wire.Register{AllowAny: true, Cookie: legit.cookie})
	if out := fx.exchange(legit.addr, captured); len(out) != 1 {
		t.Fatalf("registration to capture: %d replies", len(out))
	}
	fx.clock.Add(5 * time.Second)

	attacker := fx.newPeer("192.0.2.1:1")
	now := fx.clock.Now()
	for i := range 16 * 1024 {
		from := spoofed(i)
		stamp := now.Add(-29*time.Second + time.Duration(i%580)*100*time.Millisecond)
		pkt := wire.SealFrame(nil, attacker.id.ID(), attacker.shared, wire.Message{
			Time: stamp.UnixMilli(),
			Body: &wire.Connect{Cookie: fx.srv.cfg.Cookies.Make(from), Target: legit.id.ID()},
		})
		fx.exchange(from, pkt)
	}
	if n := fx.srv.replay.Len(); n > 1024 {
		t.Errorf("replay cache holds %d pairs, bound 1024", n)
	}
	for _, o := range fx.exchange(legit.addr, captured) {
		if _, ok := fx.open(legit, o.b).Body.(*wire.Registered); ok {
			t.Fatal("a replayed registration was accepted after the flood")
		}
	}
	fx.register(legit, wire.Register{AllowAny: true})
	fresh := fx.newPeer("203.0.113.6:40000")
	fx.register(fresh, wire.Register{AllowAny: true})
}

// strangerFrame is a Request from a fresh key that the attacker did not
// even bother to seal properly: before the cookie proof, the server had to
// do the X25519 before it could tell.
func strangerFrame() []byte {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	b := []byte{wire.TypeRequest, wire.RequestVersion}
	b = append(b, pub...)
	junk := make([]byte, crypto.NonceSize+crypto.BoxOverhead+64)
	rand.Read(junk)
	return append(b, junk...)
}

// provenStrangerFrame is strangerFrame from an attacker at a real address,
// from which it got the cookie: its nonce proves it, so the server goes on
// to the X25519.
func (f *fixture) provenStrangerFrame(from netip.AddrPort) []byte {
	b := strangerFrame()
	var sender crypto.PeerID
	copy(sender[:], b[2:34])
	var salt [wire.SaltLen]byte
	copy(salt[:], b[34+wire.ProofLen:])
	cookie := f.srv.cfg.Cookies.Make(from)
	proof := wire.RequestProof(&cookie, &sender, &salt)
	copy(b[34:], proof[:])
	return b
}

// TestStrangerKeyFlood is issue 10 item 5: every unknown sender key cost an
// X25519 before any cookie, so about 18k packets/s of fresh keys saturated a
// core. Now the cookie proof comes first: frames from spoofed sources cost
// no X25519 at all (each gets a CookieReply), and peers keep registering.
func TestStrangerKeyFlood(t *testing.T) {
	fx := newFixture(t, func(c *Config) { c.RateLimit.PerSecond = -1 })
	known := make([]*peer, 16)
	for i := range known {
		known[i] = fx.newPeer(netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + i)}), 4000).String())
		fx.register(known[i], wire.Register{AllowAny: true})
	}
	before := value(fx.srv.m.keyComputes)
	const (
		flood = 8000
		tick  = time.Millisecond // the flood runs at 1000 frames per (fake) second
	)
	ok := 0
	for i := range flood {
		fx.exchange(spoofed(i), strangerFrame())
		fx.clock.Add(tick)
		if i%100 == 0 {
			p := known[(i/100)%len(known)]
			out := fx.exchange(p.addr, fx.seal(p, &wire.Register{AllowAny: true, Cookie: p.cookie}))
			if len(out) == 1 {
				if _, is := fx.open(p, out[0].b).Body.(*wire.Registered); is {
					ok++
				}
			}
		}
	}
	if ok != flood/100 {
		t.Errorf("known peers registered %d of %d times during the flood", ok, flood/100)
	}
	spent := value(fx.srv.m.keyComputes) - before
	t.Logf("%d fresh-key frames: %v X25519s, %v cookie replies, %d/%d known-peer registrations",
		flood, spent, value(fx.srv.m.cookieReplies), ok, flood/100)
	if spent != 0 {
		t.Errorf("%v X25519s for strangers from spoofed sources", spent)
	}
	if got := value(fx.srv.m.cookieReplies); got < flood {
		t.Errorf("%v cookie replies to %d frames without a proof", got, flood)
	}
}

// TestStrangerKeyPerSource: an attacker at a real address (it has the
// cookies) rotating fresh keys and ports gets its source's small X25519
// budget.
func TestStrangerKeyPerSource(t *testing.T) {
	fx := newFixture(t, func(c *Config) { c.RateLimit.PerSecond = -1 })
	from := netip.MustParseAddrPort("192.0.2.7:1")
	before := value(fx.srv.m.keyComputes)
	for i := range 200 {
		// Rotating ports earns nothing.
		src := netip.AddrPortFrom(from.Addr(), uint16(1000+i))
		fx.exchange(src, fx.provenStrangerFrame(src))
	}
	if spent := value(fx.srv.m.keyComputes) - before; spent > DefaultKeyMissBurst {
		t.Errorf("one source cost %v X25519s, per-source burst %d", spent, DefaultKeyMissBurst)
	}
	if fx.rejected("key_rate_limited") == 0 {
		t.Error("no key_rate_limited refusal counted")
	}
}

// TestNewPeerOneX25519: a new peer's cookie round trip costs one X25519
// (its first Request, without the proof, costs none).
func TestNewPeerOneX25519(t *testing.T) {
	fx := newFixture(t, nil)
	before := value(fx.srv.m.keyComputes)
	p := fx.newPeer("203.0.113.5:40000")
	fx.register(p, wire.Register{AllowAny: true})
	fx.register(p, wire.Register{AllowAny: true})
	if spent := value(fx.srv.m.keyComputes) - before; spent != 1 {
		t.Fatalf("a new peer cost %v X25519s, want 1", spent)
	}
}

// BenchmarkStrangerKeyFlood measures what one frame from a fresh key and a
// spoofed source costs the server once the flood exceeds the key-miss
// budget (the old server did an X25519 for each).
func BenchmarkStrangerKeyFlood(b *testing.B) {
	fx := newFixture(b, func(c *Config) { c.RateLimit.PerSecond = -1 })
	frames := make([][]byte, 4096)
	for i := range frames {
		frames[i] = strangerFrame()
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		fx.srv.handle(context.Background(), fx.sc, spoofed(i%100000), frames[i%len(frames)])
	}
	b.ReportMetric(value(fx.srv.m.keyComputes)/float64(b.N), "X25519/op")
}

// TestRegisterRatePerSource is issue 10 item 7 at the door: one source
// (here an IPv6 /64, every address and port in it) registering ever new
// keys gets its registration burst and no more, while another source is
// unaffected.
func TestRegisterRatePerSource(t *testing.T) {
	fx := newFixture(t, func(c *Config) {
		c.RateLimit.PerSecond = -1
		c.KeyMissRate.PerSecond = -1 // its own test; here every key is new
	})
	first := fx.newPeer("[2001:db8:0:1::ffff]:1999")
	fx.register(first, wire.Register{AllowAny: true})
	accepted := 0
	for i := range 2 * DefaultRegisterBurst {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, byte(i >> 8), byte(i)})
		p := fx.newPeer(netip.AddrPortFrom(a, uint16(2000+i)).String())
		p.cookie = fx.srv.cfg.Cookies.Make(p.addr)
		out := fx.exchange(p.addr, fx.seal(p, &wire.Register{AllowAny: true, Cookie: p.cookie}))
		if len(out) == 1 {
			if _, ok := fx.open(p, out[0].b).Body.(*wire.Registered); ok {
				accepted++
			}
		}
	}
	if accepted == 0 || accepted > DefaultRegisterBurst {
		t.Fatalf("one /64 registered %d new peers at once; the burst is %d", accepted, DefaultRegisterBurst)
	}
	if fx.rejected("register_rate_limited") == 0 {
		t.Fatal("no register_rate_limited refusal counted")
	}
	other := fx.newPeer("[2001:db8:2::1]:4000")
	fx.register(other, wire.Register{AllowAny: true})
	// Refreshes of a peer this instance knows, from the exhausted /64,
	// do not count against it.
	for range 5 {
		out := fx.exchange(first.addr, fx.seal(first, &wire.Register{AllowAny: true, Cookie: first.cookie}))
		if len(out) != 1 {
			t.Fatalf("refresh: %d replies", len(out))
		}
		if _, ok := fx.open(first, out[0].b).Body.(*wire.Registered); !ok {
			t.Fatal("a known peer's refresh was refused by the registration limit")
		}
	}
}

// sealRequest is a protocol-3 Request from p, with the proof of p's cookie
// when it has one; it returns the frame and its salt.
func (f *fixture) sealRequest(p *peer, body wire.Body) ([]byte, [wire.SaltLen]byte) {
	plain := wire.AppendMessage(nil, wire.Message{Time: f.clock.Now().UnixMilli(), Body: body})
	return wire.SealRequest(nil, p.id.ID(), p.shared, plain, &p.cookie)
}

// TestNewPeersDuringKeyFlood: during a flood of fresh keys from spoofed
// sources, brand-new peers from addresses never seen (and from one seen
// before) register and connect, each after one CookieReply round trip, and
// the flood costs no X25519. Before, the cookie was only inside the box:
// every such frame cost an X25519 within a global budget, which the flood
// spent, so new peers' frames were dropped with the flood's.
func TestNewPeersDuringKeyFlood(t *testing.T) {
	fx := newFixture(t, func(c *Config) {
		c.RateLimit.PerSecond = -1
		c.KeyMissBudget = 50
	})
	target := fx.newPeer("203.0.113.200:4000")
	fx.register(target, wire.Register{AllowAny: true})
	computes := value(fx.srv.m.keyComputes)
	flood := 0
	spend := func() {
		for range 200 {
			fx.exchange(spoofed(flood), strangerFrame())
			flood++
		}
	}
	const newPeers = 40
	registered, connected := 0, 0
	for i := range newPeers {
		spend()
		addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i)}), 5000)
		if i == newPeers-1 {
			addr = netip.AddrPortFrom(target.addr.Addr(), 4001) // a new key from a known address
		}
		p := fx.newPeer(addr.String())
		computesBefore := value(fx.srv.m.keyComputes)
		req, salt := fx.sealRequest(p, &wire.Register{AllowAny: true})
		out := fx.exchange(p.addr, req)
		if value(fx.srv.m.keyComputes) != computesBefore {
			t.Errorf("new peer %d: a request without a proof cost an X25519", i)
		}
		c, echo, err := wire.ParseCookieReply(out[0].b)
		if len(out) != 1 || err != nil {
			t.Fatalf("new peer %d: %d replies to its first request, want a cookie reply (%v)", i, len(out), err)
		}
		if echo != salt || len(out[0].b) >= len(req) {
			t.Fatalf("cookie reply echoes %x (want %x), %d bytes to a request of %d", echo, salt, len(out[0].b), len(req))
		}
		p.cookie = c
		spend()
		req, _ = fx.sealRequest(p, &wire.Register{AllowAny: true, Cookie: p.cookie})
		if out = fx.exchange(p.addr, req); len(out) == 1 {
			if _, ok := fx.open(p, out[0].b).Body.(*wire.Registered); ok {
				registered++
			}
		}
		spend()
		req, _ = fx.sealRequest(p, &wire.Connect{Cookie: p.cookie, TxID: uint64(i), Target: target.id.ID()})
		for _, o := range fx.exchange(p.addr, req) {
			if o.to != p.addr {
				continue
			}
			if r, ok := fx.open(p, o.b).Body.(*wire.ConnectReply); ok && r.Found {
				connected++
			}
		}
	}
	spent := value(fx.srv.m.keyComputes) - computes
	t.Logf("%d flood frames: %v cookie replies, %v X25519s; %d/%d new peers registered, %d connected",
		flood, value(fx.srv.m.cookieReplies), spent, registered, newPeers, connected)
	if registered != newPeers || connected != newPeers {
		t.Errorf("during the flood %d/%d new peers registered and %d connected", registered, newPeers, connected)
	}
	if spent != newPeers {
		t.Errorf("%v X25519s, want one per new peer", spent)
	}
}

// TestPunchRatePerTarget is the punch-flood attack: registered keys Connect
// to one peer over and over, and each Connect made the server send it a
// large Punch (4.8 times the attacker's bytes). Now a target is sent at
// most its Punch burst, then its rate; the requesters still get their
// ConnectReply, and Punches to other targets are not affected.
func TestPunchRatePerTarget(t *testing.T) {
	fx := newFixture(t, func(c *Config) { c.RateLimit.PerSecond = -1 })
	victim := fx.newPeer("203.0.113.50:4000")
	fx.register(victim, wire.Register{AllowAny: true})
	other := fx.newPeer("203.0.113.51:4000")
	fx.register(other, wire.Register{AllowAny: true})
	bots := make([]*peer, 16)
	for i := range bots {
		bots[i] = fx.newPeer(netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}), 7000).String())
		fx.register(bots[i], wire.Register{AllowAny: true})
	}
	punches, replies := 0, 0
	connect := func(p *peer, to *peer, tx uint64) (punched bool) {
		out := fx.exchange(p.addr, fx.seal(p, &wire.Connect{Cookie: p.cookie, TxID: tx, Target: to.id.ID()}))
		for _, o := range out {
			switch o.to {
			case to.addr:
				punched = true
			case p.addr:
				if r, ok := fx.open(p, o.b).Body.(*wire.ConnectReply); ok && r.Found {
					replies++
				}
			}
		}
		return punched
	}
	const flood = 400
	for i := range flood {
		if connect(bots[i%len(bots)], victim, uint64(i)) {
			punches++
		}
	}
	if punches > DefaultPunchBurst {
		t.Errorf("the victim was sent %d Punches at once, burst %d", punches, DefaultPunchBurst)
	}
	if replies != flood {
		t.Errorf("%d of %d connects got their ConnectReply", replies, flood)
	}
	if !connect(bots[0], other, 1<<32) {
		t.Error("another target's Punch was limited too")
	}
	fx.clock.Add(time.Second)
	later := 0
	for i := range flood {
		if connect(bots[i%len(bots)], victim, uint64(flood+i)) {
			later++
		}
	}
	if later > DefaultPunchRate+1 || later == 0 {
		t.Errorf("a second later the victim was sent %d Punches, rate %d/s", later, DefaultPunchRate)
	}
	t.Logf("%d connects: %d Punches at once, %d a second later; %v limited", 2*flood, punches, later, value(fx.srv.m.punchLimited))
}
