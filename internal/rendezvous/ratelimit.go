package rendezvous

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

const limiterShards = 64

// limiter is a per-source token bucket map of bounded size. A source is an
// IPv4 address or an IPv6 /64 (one subscriber's prefix). A bucket that has
// refilled is the same as no bucket, so a full shard first forgets such
// sources, and only then an arbitrary one.
type limiter struct {
	rate     float64 // tokens per nanosecond
	burst    float64
	perShard int
	seed     maphash.Seed
	off      bool
	shards   [limiterShards]limiterShard
}

type limiterShard struct {
	mu sync.Mutex
	m  map[netip.Addr]bucket
}

type bucket struct {
	tokens float64
	last   int64 // Unix ns of the last refill
}

func newLimiter(cfg RateLimit) *limiter {
	l := &limiter{
		rate:     cfg.PerSecond / float64(time.Second),
		burst:    float64(cfg.Burst),
		perShard: max(1, cfg.Sources/limiterShards),
		seed:     maphash.MakeSeed(),
		off:      cfg.PerSecond < 0,
	}
	for i := range l.shards {
		l.shards[i].m = make(map[netip.Addr]bucket)
	}
	return l
}

// sourceOf returns the rate-limited source of an address.
func sourceOf(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// allow takes one token from the source's bucket.
func (l *limiter) allow(src netip.Addr, now time.Time) bool {
	if l.off {
		return true
	}
	src = sourceOf(src)
	b16 := src.As16()
	s := &l.shards[maphash.Bytes(l.seed, b16[:])%limiterShards]
	t := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[src]
	if !ok {
		if len(s.m) >= l.perShard {
			l.evict(s, t)
		}
		b = bucket{tokens: l.burst, last: t}
	} else if dt := t - b.last; dt > 0 {
		b.tokens = min(l.burst, b.tokens+float64(dt)*l.rate)
		b.last = t
	}
	if b.tokens < 1 {
		s.m[src] = b
		return false
	}
	b.tokens--
	s.m[src] = b
	return true
}

// evict makes room in a full shard: it drops sources whose bucket has
// refilled (looking at a few), else one arbitrary source.
func (l *limiter) evict(s *limiterShard, now int64) {
	looked := 0
	var any netip.Addr
	for a, b := range s.m {
		if b.tokens+float64(now-b.last)*l.rate >= l.burst {
			delete(s.m, a)
			return
		}
		any = a
		if looked++; looked >= 8 {
			break
		}
	}
	delete(s.m, any)
}
