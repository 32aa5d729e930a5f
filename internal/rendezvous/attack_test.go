package rendezvous

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
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
// Challenge and leaves nothing behind.
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

// strangerFrame is a sealed Register from a fresh key that the attacker did
// not even bother to seal properly: the server has to do the X25519 before
// it can tell.
func strangerFrame() []byte {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	b := []byte{wire.TypeSealed, wire.Version}
	b = append(b, pub...)
	junk := make([]byte, crypto.NonceSize+crypto.BoxOverhead+64)
	rand.Read(junk)
	return append(b, junk...)
}

// TestStrangerKeyFlood is issue 10 item 5: every unknown sender key cost an
// X25519 before any cookie, so about 18k packets/s of fresh keys saturated a
// core. Now strangers' X25519s fit a global budget (and one per source),
// while peers whose keys are cached keep registering without touching it.
func TestStrangerKeyFlood(t *testing.T) {
	const budget = 200
	fx := newFixture(t, func(c *Config) {
		c.RateLimit.PerSecond = -1
		c.KeyMissBudget = budget
	})
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
	elapsed := float64(flood) * tick.Seconds()
	t.Logf("%d fresh-key frames in %vs: %v X25519s, %v refused by the global budget, %d/%d known-peer registrations",
		flood, elapsed, spent, fx.rejected("key_budget"), ok, flood/100)
	if limit := budget + budget*elapsed; spent > limit {
		t.Errorf("%v X25519s for strangers in %vs of flood, budget allows %v", spent, elapsed, limit)
	}
	if fx.rejected("key_budget") == 0 {
		t.Error("no key_budget refusal counted")
	}
}

// TestStrangerKeyPerSource: one source rotating fresh keys gets its own
// small budget, not the global one.
func TestStrangerKeyPerSource(t *testing.T) {
	fx := newFixture(t, func(c *Config) { c.RateLimit.PerSecond = -1 })
	from := netip.MustParseAddrPort("192.0.2.7:1")
	before := value(fx.srv.m.keyComputes)
	for i := range 200 {
		// Rotating ports earns nothing.
		fx.exchange(netip.AddrPortFrom(from.Addr(), uint16(1000+i)), strangerFrame())
	}
	if spent := value(fx.srv.m.keyComputes) - before; spent > DefaultKeyMissBurst {
		t.Errorf("one source cost %v X25519s, per-source burst %d", spent, DefaultKeyMissBurst)
	}
	if fx.rejected("key_rate_limited") == 0 {
		t.Error("no key_rate_limited refusal counted")
	}
}

// TestNewPeerOneX25519: a new peer's Challenge round trip costs one X25519,
// not two (the key is kept on probation until the cookie comes back).
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

// TestKeyCacheShardsNotChosen: the sender chooses its key's bytes; keys that
// agree on every byte the old shard pick looked at must still spread over
// the shards (the old cache held only one shard's worth of them).
func TestKeyCacheShardsNotChosen(t *testing.T) {
	const size = 64 * keyCacheShards
	c := newKeyCache(size)
	var k [32]byte
	for i := range size {
		var id crypto.PeerID
		binary.BigEndian.PutUint64(id[:8], uint64(i))
		id[31] = 7
		c.put(&id, &k)
	}
	held := 0
	for i := range size {
		var id crypto.PeerID
		binary.BigEndian.PutUint64(id[:8], uint64(i))
		id[31] = 7
		if _, ok := c.get(&id); ok {
			held++
		}
	}
	if held < size/2 {
		t.Fatalf("cache holds %d of %d keys sharing a last byte: one shard takes them all", held, size)
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

// TestKeyCacheKeepsUsedKeys: peers that proved an address and keep
// refreshing hold their cached keys against a stream of keys used once (an
// attacker with many real addresses, each within its X25519 budget), so
// they do not fall back to the contested key-miss budget. The old cache
// forgot an arbitrary entry.
func TestKeyCacheKeepsUsedKeys(t *testing.T) {
	const size = 8 * keyCacheShards
	c := newKeyCache(size)
	var k [32]byte
	id := func(tag byte, i int) *crypto.PeerID {
		var p crypto.PeerID
		p[0] = tag
		binary.BigEndian.PutUint64(p[1:], uint64(i))
		return &p
	}
	const peers = size / 2
	for i := range peers {
		c.put(id(1, i), &k)
	}
	for round := range 20 {
		for i := range peers { // every peer refreshes once a round
			if _, ok := c.get(id(1, i)); !ok {
				c.put(id(1, i), &k) // a miss: the X25519 again
			}
		}
		for j := range size { // a cache's worth of fresh keys in between
			c.put(id(2, round*size+j), &k)
		}
	}
	held := 0
	for i := range peers {
		if _, ok := c.get(id(1, i)); ok {
			held++
		}
	}
	if held < peers*3/4 {
		t.Fatalf("%d of %d refreshing peers kept their keys through the stream of fresh keys", held, peers)
	}
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

// TestNewPeerBehindProvenAddress: during a fresh-key flood that spends the
// global key-miss budget, a new peer behind an address that already proved
// itself (another peer behind the same NAT) still registers.
func TestNewPeerBehindProvenAddress(t *testing.T) {
	fx := newFixture(t, func(c *Config) {
		c.RateLimit.PerSecond = -1
		c.KeyMissBudget = 50
	})
	known := fx.newPeer("203.0.113.10:4000")
	fx.register(known, wire.Register{AllowAny: true})
	for i := range 500 {
		fx.exchange(spoofed(i), strangerFrame())
	}
	if fx.rejected("key_budget") == 0 {
		t.Fatal("the flood did not spend the budget; the test proves nothing")
	}
	neighbour := fx.newPeer("203.0.113.10:5000")
	fx.register(neighbour, wire.Register{AllowAny: true})
}
