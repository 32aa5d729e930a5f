// Package ratelimit is keymesh's one rate limiter for traffic from strangers:
// token buckets keyed by source, where a source is an IPv4 address or an IPv6
// /64 (one subscriber's prefix) and never a port, so rotating source ports
// earns nothing (AllowAddrPort, for ports a cookie proved, aside). The table of buckets is sharded by a hash keyed with a
// per-process secret (nobody can aim many sources at one shard) and bounded:
// when a shard is full it forgets sources whose buckets have refilled (an
// absent bucket is the same as a full one) and then arbitrary ones. It
// forgets rather than refuses, so a flood of spoofed sources can cost a
// legitimate source its history, never its service.
//
// Time is passed in by the caller as Unix nanoseconds, so the hot paths read
// the clock once per batch and tests drive the limiter on a fake clock.
package ratelimit

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"sync"
)

// Shards is how many independently locked parts a Limiter's table has.
const Shards = 64

// Config sets a Limiter. Zero fields take the documented defaults.
type Config struct {
	// PerSecond is the refill rate of each source's bucket, in tokens per
	// second. Negative turns the limiter off (everything is allowed).
	PerSecond float64
	// Burst is the bucket size in tokens. Default: one second's refill.
	Burst float64
	// MaxSources bounds the table. Default DefaultMaxSources.
	MaxSources int
	// Shared are addresses that stand for many peers, such as a stream
	// relay's presence address (every tunnel behind it sends from there):
	// a source inside one gets SharedFactor times PerSecond and Burst.
	// Such a relay bounds each of its tunnels itself, so one tunnel cannot
	// spend the shared bucket.
	Shared []netip.Prefix
	// SharedFactor multiplies the rate and burst of Shared sources
	// (values below 1 count as 1).
	SharedFactor float64
}

// DefaultMaxSources bounds a Limiter's table when Config.MaxSources is 0:
// 65,536 sources take about 3 MiB.
const DefaultMaxSources = 1 << 16

// Limiter is a bounded table of per-source token buckets. It is safe for
// concurrent use.
type Limiter struct {
	rate     float64 // tokens per nanosecond
	burst    float64
	perShard int
	off      bool
	shared   []netip.Prefix
	factor   float64
	seed     maphash.Seed
	// pairSeeds key AllowPair's hash of a source and a destination.
	pairSeeds [2]maphash.Seed
	shards    [Shards]shard
}

type shard struct {
	mu sync.Mutex
	m  map[key]bucket
	_  [40]byte // keep shards on separate cache lines
}

// key names a bucket: a source in Source's form (Allow), or a keyed 128-bit
// hash of a source and a destination (AllowPair), which nobody without the
// per-process seeds can aim at another pair's bucket.
type key [16]byte

type bucket struct {
	tokens float64
	last   int64 // Unix ns of the last refill
}

// New returns a Limiter for cfg.
func New(cfg Config) *Limiter {
	if cfg.MaxSources <= 0 {
		cfg.MaxSources = DefaultMaxSources
	}
	if cfg.Burst <= 0 {
		cfg.Burst = max(1, cfg.PerSecond)
	}
	l := &Limiter{
		rate:     cfg.PerSecond / 1e9,
		burst:    cfg.Burst,
		perShard: max(1, cfg.MaxSources/Shards),
		off:      cfg.PerSecond < 0,
		shared:   cfg.Shared,
		factor:   max(1, cfg.SharedFactor),
		seed:     maphash.MakeSeed(),

		pairSeeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
	}
	for i := range l.shards {
		l.shards[i].m = make(map[key]bucket)
	}
	return l
}

// Source returns the key a limit applies to for address a: a itself for
// IPv4 (and IPv4-mapped IPv6), its /64 for IPv6; zones are dropped.
func Source(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// Net returns the network a per-site cap counts address a against: its
// IPv4 /24 or IPv6 /48. One site is likely to hold a /24, and an IPv6
// attacker gets a /48 as easily as a /64, so a cap per /64 alone is
// multiplied by 65,536 for it.
func Net(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

// Allow takes one token from src's bucket at time now (Unix ns) and reports
// whether it was there.
func (l *Limiter) Allow(src netip.Addr, now int64) bool { return l.AllowN(src, now, 1) }

// AllowN takes cost tokens from src's bucket at time now (Unix ns) and
// reports whether it held them. A refused request takes nothing.
func (l *Limiter) AllowN(src netip.Addr, now int64, cost float64) bool {
	return l.allow(src, Source(src).As16(), now, cost)
}

// AllowPair takes one token from the bucket of src sending to dst (each an
// IPv4 address or an IPv6 /64, as Source gives) at time now (Unix ns) and
// reports whether it was there. A pair's bucket is the limit of one flow
// between two places: someone who spoofs src spends src's budget towards
// dst only, and only if it can send to dst at all (for the relay: it holds
// a ticket for dst). Shared applies to src.
func (l *Limiter) AllowPair(src, dst netip.Addr, now int64) bool {
	return l.AllowPairN(src, dst, now, 1)
}

// AllowPairN is AllowPair for cost tokens at once (a run of datagrams); a
// refused request takes nothing.
func (l *Limiter) AllowPairN(src, dst netip.Addr, now int64, cost float64) bool {
	if l.off {
		return true
	}
	var pair [32]byte
	s16, d16 := Source(src).As16(), Source(dst).As16()
	copy(pair[:16], s16[:])
	copy(pair[16:], d16[:])
	var k key
	binary.LittleEndian.PutUint64(k[:8], maphash.Bytes(l.pairSeeds[0], pair[:]))
	binary.LittleEndian.PutUint64(k[8:], maphash.Bytes(l.pairSeeds[1], pair[:]))
	return l.allow(src, k, now, cost)
}

// AllowAddrPort takes one token from the bucket of src's address and port
// together at time now (Unix ns) and reports whether it was there. It is
// only for a source whose port is proven (a cookie made for that address
// and port came back from it) at an address that stands for many peers,
// each on a port of its own (a stream relay's presence, one port per
// tunnel): a spoofer rotating ports proves none, so earns nothing. Shared
// applies to the address.
func (l *Limiter) AllowAddrPort(src netip.AddrPort, now int64) bool {
	if l.off {
		return true
	}
	var b [18]byte
	a := src.Addr().Unmap().WithZone("").As16()
	copy(b[:16], a[:])
	binary.BigEndian.PutUint16(b[16:], src.Port())
	var k key
	binary.LittleEndian.PutUint64(k[:8], maphash.Bytes(l.pairSeeds[0], b[:]))
	binary.LittleEndian.PutUint64(k[8:], maphash.Bytes(l.pairSeeds[1], b[:]))
	return l.allow(src.Addr(), k, now, 1)
}

func (l *Limiter) allow(src netip.Addr, k key, now int64, cost float64) bool {
	if l.off {
		return true
	}
	rate, burst := l.rate, l.burst
	if l.isShared(src) {
		rate, burst = rate*l.factor, burst*l.factor
	}
	s := &l.shards[maphash.Bytes(l.seed, k[:])%Shards]
	s.mu.Lock()
	b, ok := s.m[k]
	if ok {
		b.refill(now, rate, burst)
	} else {
		if len(s.m) >= l.perShard {
			l.evict(s, now)
		}
		b = bucket{tokens: burst, last: now}
	}
	pass := b.tokens >= cost
	if pass {
		b.tokens -= cost
	}
	s.m[k] = b
	s.mu.Unlock()
	return pass
}

// isShared reports whether src lies in one of Config.Shared.
func (l *Limiter) isShared(src netip.Addr) bool {
	if len(l.shared) == 0 {
		return false
	}
	src = src.Unmap().WithZone("")
	for _, p := range l.shared {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

func (b *bucket) refill(now int64, rate, burst float64) {
	if el := now - b.last; el > 0 {
		b.tokens = min(burst, b.tokens+float64(el)*rate)
		b.last = now
	}
}

// evict makes room in a full shard: it drops the first source among a few
// whose bucket has refilled, else the last one it looked at.
func (l *Limiter) evict(s *shard, now int64) {
	looked := 0
	var victim key
	for a, b := range s.m {
		b.refill(now, l.rate, l.burst)
		if b.tokens >= l.burst {
			delete(s.m, a)
			return
		}
		victim = a
		if looked++; looked >= 8 {
			break
		}
	}
	delete(s.m, victim)
}

// Len is the number of sources the table holds.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// Budget is one token bucket shared by every source: a global cap on an
// expensive step (signature checks, allocations). It is safe for
// concurrent use.
type Budget struct {
	mu     sync.Mutex
	rate   float64 // tokens per nanosecond; <= 0: no cap
	burst  float64
	tokens float64
	last   int64
}

// NewBudget returns a Budget refilled at perSecond up to burst tokens,
// full at time now (Unix ns). perSecond <= 0 means no cap.
func NewBudget(perSecond, burst float64, now int64) *Budget {
	if burst <= 0 {
		burst = max(1, perSecond)
	}
	return &Budget{rate: perSecond / 1e9, burst: burst, tokens: burst, last: now}
}

// Allow takes one token at time now (Unix ns) and reports whether it was
// there.
func (b *Budget) Allow(now int64) bool {
	if b.rate <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if el := now - b.last; el > 0 {
		b.tokens = min(b.burst, b.tokens+float64(el)*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
