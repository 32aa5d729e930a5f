package relay

import (
	"crypto/rand"
	"encoding/binary"
	"net/netip"
	"sync"
)

// limiterShards splits the rate limiter's table so that Serve loops on
// several sockets rarely wait for one another.
const limiterShards = 64

// limiter is a table of per-source token buckets, sharded by a keyed hash
// of the source and bounded in size, plus one global bucket for binds.
type limiter struct {
	off         bool
	rate, burst float64 // tokens per nanosecond is rate/1e9
	maxPerShard int
	seed        uint64
	shards      [limiterShards]limShard

	bindMu     sync.Mutex
	bindRate   float64 // per second; <= 0: no cap
	bindTokens float64
	bindLast   int64
}

type limShard struct {
	mu sync.Mutex
	m  map[netip.AddrPort]bucket
	_  [48]byte // keep shards on separate cache lines
}

type bucket struct {
	tokens float64
	last   int64 // Unix nanoseconds of the last refill
}

func newLimiter(r RateLimit, now int64) *limiter {
	l := &limiter{
		off:         r.Disabled,
		rate:        r.Rate,
		burst:       r.Burst,
		maxPerShard: max(1, r.MaxSources/limiterShards),
		bindRate:    r.BindsPerSecond,
		bindTokens:  r.BindsPerSecond,
		bindLast:    now,
	}
	var s [8]byte
	_, _ = rand.Read(s[:])
	l.seed = binary.LittleEndian.Uint64(s[:])
	for i := range l.shards {
		l.shards[i].m = make(map[netip.AddrPort]bucket)
	}
	return l
}

// shard picks src's shard with a hash keyed by a per-process secret, so
// that nobody can aim many sources at one shard.
func (l *limiter) shard(src netip.AddrPort) *limShard {
	a := src.Addr().As16()
	h := l.seed ^ uint64(src.Port())
	h ^= binary.LittleEndian.Uint64(a[:8])
	h *= 0x9e3779b97f4a7c15
	h ^= binary.LittleEndian.Uint64(a[8:])
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 31
	return &l.shards[h%limiterShards]
}

// allow takes cost tokens from src's bucket at time now (Unix ns) and
// reports whether it had them.
func (l *limiter) allow(src netip.AddrPort, now int64, cost float64) bool {
	if l.off {
		return true
	}
	sh := l.shard(src)
	sh.mu.Lock()
	b, ok := sh.m[src]
	if ok {
		b.refill(now, l.rate, l.burst)
	} else {
		if len(sh.m) >= l.maxPerShard {
			l.evict(sh, now)
		}
		b = bucket{tokens: l.burst, last: now}
	}
	pass := b.tokens >= cost
	if pass {
		b.tokens -= cost
	}
	sh.m[src] = b
	sh.mu.Unlock()
	return pass
}

func (b *bucket) refill(now int64, rate, burst float64) {
	if el := now - b.last; el > 0 {
		b.tokens = min(burst, b.tokens+float64(el)*rate/1e9)
		b.last = now
	}
}

// evict makes room in a full shard: it drops the buckets that have refilled
// (an absent bucket is the same as a full one), and clears the shard when
// that frees too little.
func (l *limiter) evict(sh *limShard, now int64) {
	for k, b := range sh.m {
		b.refill(now, l.rate, l.burst)
		if b.tokens >= l.burst {
			delete(sh.m, k)
		}
	}
	if len(sh.m) > l.maxPerShard/2 {
		clear(sh.m)
	}
}

// allowBind takes one bind from the global budget.
func (l *limiter) allowBind(now int64) bool {
	if l.bindRate <= 0 {
		return true
	}
	l.bindMu.Lock()
	defer l.bindMu.Unlock()
	if el := now - l.bindLast; el > 0 {
		l.bindTokens = min(l.bindRate, l.bindTokens+float64(el)*l.bindRate/1e9)
		l.bindLast = now
	}
	if l.bindTokens < 1 {
		return false
	}
	l.bindTokens--
	return true
}

// size is the number of buckets held (for tests).
func (l *limiter) size() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
