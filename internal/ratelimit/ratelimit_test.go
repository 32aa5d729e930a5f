package ratelimit

import (
	"net/netip"
	"testing"
	"time"
)

func TestPerSourceBucket(t *testing.T) {
	l := New(Config{PerSecond: 10, Burst: 3})
	a := netip.MustParseAddr("203.0.113.7")
	var now int64
	for i := range 3 {
		if !l.Allow(a, now) {
			t.Fatalf("request %d within the burst refused", i)
		}
	}
	if l.Allow(a, now) {
		t.Fatal("request beyond the burst allowed")
	}
	if !l.Allow(netip.MustParseAddr("203.0.113.8"), now) {
		t.Fatal("another source refused")
	}
	now += int64(100 * time.Millisecond) // one token at 10/s
	if !l.Allow(a, now) || l.Allow(a, now) {
		t.Fatal("refill after 100 ms should give exactly one token")
	}
}

func TestSourceIgnoresPortAndHostBits(t *testing.T) {
	l := New(Config{PerSecond: 1, Burst: 2})
	// Two addresses in one /64 share a bucket; another /64 does not.
	if !l.Allow(netip.MustParseAddr("2001:db8:1:2::1"), 0) || !l.Allow(netip.MustParseAddr("2001:db8:1:2:ffff::9"), 0) {
		t.Fatal("burst refused")
	}
	if l.Allow(netip.MustParseAddr("2001:db8:1:2:abcd::1"), 0) {
		t.Fatal("a third address in the same /64 got a fresh bucket")
	}
	if !l.Allow(netip.MustParseAddr("2001:db8:1:3::1"), 0) {
		t.Fatal("a different /64 was refused")
	}
	// IPv4-mapped is the same source as IPv4.
	v4 := netip.MustParseAddr("198.51.100.1")
	l.Allow(v4, 0)
	l.Allow(v4, 0)
	if l.Allow(netip.MustParseAddr("::ffff:198.51.100.1"), 0) {
		t.Fatal("IPv4-mapped address escaped its IPv4 bucket")
	}
}

func TestRefusedRequestTakesNothing(t *testing.T) {
	l := New(Config{PerSecond: 1, Burst: 10})
	a := netip.MustParseAddr("203.0.113.1")
	if l.AllowN(a, 0, 11) {
		t.Fatal("cost above the burst allowed")
	}
	if !l.AllowN(a, 0, 10) {
		t.Fatal("a refused request took tokens")
	}
}

func TestTableIsBoundedAndForgets(t *testing.T) {
	const maxSources = 1024
	l := New(Config{PerSecond: 1, Burst: 1, MaxSources: maxSources})
	victim := netip.MustParseAddr("203.0.113.200")
	if !l.Allow(victim, 0) || l.Allow(victim, 0) {
		t.Fatal("victim's bucket misbehaves")
	}
	// A flood of spoofed sources: the table stays bounded and never
	// refuses a source it does not hold.
	for i := range 200_000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if !l.Allow(a, 0) {
			t.Fatalf("new source %v refused: a full table must forget, not refuse", a)
		}
	}
	if n := l.Len(); n > maxSources {
		t.Fatalf("table holds %d sources, bound %d", n, maxSources)
	}
}

func TestDisabled(t *testing.T) {
	l := New(Config{PerSecond: -1})
	for range 100 {
		if !l.Allow(netip.MustParseAddr("203.0.113.1"), 0) {
			t.Fatal("disabled limiter refused")
		}
	}
	if l.Len() != 0 {
		t.Fatal("disabled limiter stored sources")
	}
}

func TestBudget(t *testing.T) {
	b := NewBudget(2, 2, 0)
	allow := func(b *Budget, now int64, n int) (got []bool) {
		for range n {
			got = append(got, b.Allow(now))
		}
		return got
	}
	if got := allow(b, 0, 3); !got[0] || !got[1] || got[2] {
		t.Fatalf("budget of 2 at once: %v", got)
	}
	if got := allow(b, int64(500*time.Millisecond), 2); !got[0] || got[1] {
		t.Fatalf("refill after 500 ms at 2/s should give one token: %v", got)
	}
	if got := allow(NewBudget(-1, 0, 0), 0, 2); !got[0] || !got[1] {
		t.Fatal("uncapped budget refused")
	}
}

func BenchmarkAllow(b *testing.B) {
	l := New(Config{PerSecond: 1e9, Burst: 1e9})
	a := netip.MustParseAddr("203.0.113.1")
	b.ReportAllocs()
	for i := range b.N {
		l.Allow(a, int64(i))
	}
}

// A stream relay's presence address stands for many peers: it gets
// SharedFactor times the bucket, every other source the plain one.
func TestSharedSourceGetsFactor(t *testing.T) {
	l := New(Config{PerSecond: 10, Burst: 5, Shared: []netip.Prefix{netip.MustParsePrefix("198.51.100.9/32")}, SharedFactor: 100})
	relay, other := netip.MustParseAddr("198.51.100.9"), netip.MustParseAddr("198.51.100.10")
	var now int64
	for i := range 500 {
		if !l.Allow(relay, now) {
			t.Fatalf("shared source refused at %d of its 500 burst", i)
		}
	}
	if l.Allow(relay, now) {
		t.Fatal("shared source allowed beyond factor x burst")
	}
	now += int64(time.Second) // 1,000 tokens at 100 x 10/s, capped at 500
	for i := range 500 {
		if !l.Allow(relay, now) {
			t.Fatalf("shared source refused at %d after a second's refill", i)
		}
	}
	for i := range 5 {
		if !l.Allow(other, now) {
			t.Fatalf("plain source refused at %d", i)
		}
	}
	if l.Allow(other, now) {
		t.Fatal("plain source got the shared factor")
	}
	if !l.Allow(netip.MustParseAddr("::ffff:198.51.100.9"), now+int64(10*time.Millisecond)) {
		t.Fatal("IPv4-mapped form of the shared address not recognised")
	}
}

// TestAllowPairKeysBySourceAndDestination: a pair's bucket is its own; the
// source's port and host bits still do not count, nor do the destination's.
func TestAllowPairKeysBySourceAndDestination(t *testing.T) {
	l := New(Config{PerSecond: 1, Burst: 2})
	src := netip.MustParseAddr("198.51.100.7")
	d1, d2 := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8:1:2::1")
	for i := range 2 {
		if !l.AllowPair(src, d1, 0) || !l.AllowPair(src, d2, 0) {
			t.Fatalf("request %d refused within the burst", i)
		}
	}
	if l.AllowPair(src, d1, 0) {
		t.Error("third request to d1 allowed over a burst of 2")
	}
	if l.AllowPair(src, netip.MustParseAddr("2001:db8:1:2::99"), 0) {
		t.Error("another address in d2's /64 got its own bucket")
	}
	if !l.Allow(src, 0) {
		t.Error("the source's own bucket was spent by its pairs")
	}
}

// TestAllowAddrPortKeysByPort: each port of an address has a bucket of its
// own, apart from the address's; Shared applies; an off limiter allows.
func TestAllowAddrPortKeysByPort(t *testing.T) {
	shared := netip.MustParsePrefix("198.51.100.7/32")
	l := New(Config{PerSecond: 1, Burst: 2, Shared: []netip.Prefix{shared}, SharedFactor: 3})
	p1, p2 := netip.MustParseAddrPort("203.0.113.5:1000"), netip.MustParseAddrPort("203.0.113.5:1001")
	for i := range 2 {
		if !l.AllowAddrPort(p1, 0) || !l.AllowAddrPort(p2, 0) {
			t.Fatalf("request %d refused within the burst", i)
		}
	}
	if l.AllowAddrPort(p1, 0) {
		t.Error("third request from one port allowed over a burst of 2")
	}
	if !l.Allow(p1.Addr(), 0) {
		t.Error("the address's own bucket was spent by its ports")
	}
	tunnel := netip.MustParseAddrPort("198.51.100.7:2000")
	for i := range 6 {
		if !l.AllowAddrPort(tunnel, 0) {
			t.Fatalf("request %d from a shared address's port refused within 3 x the burst", i)
		}
	}
	if l.AllowAddrPort(tunnel, 0) {
		t.Error("a shared address's port got more than 3 x the burst")
	}
	if !New(Config{PerSecond: -1}).AllowAddrPort(p1, 0) {
		t.Error("an off limiter refused")
	}
}
