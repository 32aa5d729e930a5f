package rendezvous

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/ratelimit"
)

const (
	provenShards = 64
	// provenFor is how long a source counts as proven after its last valid
	// cookie.
	provenFor = 10 * time.Minute
)

// provenSources remembers the sources (IPv4 address or IPv6 /64) that sent
// a valid cookie within provenFor: a new key from such a source (another
// peer behind the same NAT, a peer that made a new key) draws on a budget of
// its own, which a flood of fresh keys from spoofed sources cannot spend.
// The table is bounded (twice RateLimit.Sources, about 64 bytes a source):
// a full shard forgets an expired source among a few, else an arbitrary
// one.
type provenSources struct {
	seed     maphash.Seed
	perShard int
	shards   [provenShards]provenShard
}

type provenShard struct {
	mu sync.Mutex
	m  map[netip.Addr]int64 // source -> Unix ns of its last valid cookie
}

func newProvenSources(size int) *provenSources {
	p := &provenSources{seed: maphash.MakeSeed(), perShard: max(1, size/provenShards)}
	for i := range p.shards {
		p.shards[i].m = make(map[netip.Addr]int64)
	}
	return p
}

func (p *provenSources) shard(src netip.Addr) *provenShard {
	b := src.As16()
	return &p.shards[maphash.Bytes(p.seed, b[:])%provenShards]
}

// mark records a valid cookie from a's source at now (Unix ns).
func (p *provenSources) mark(a netip.Addr, now int64) {
	src := ratelimit.Source(a)
	s := p.shard(src)
	s.mu.Lock()
	if _, ok := s.m[src]; !ok && len(s.m) >= p.perShard {
		looked := 0
		var victim netip.Addr
		for k, t := range s.m {
			victim = k
			if now-t > int64(provenFor) {
				break
			}
			if looked++; looked >= 8 {
				break
			}
		}
		delete(s.m, victim)
	}
	s.m[src] = now
	s.mu.Unlock()
}

// has reports whether a's source sent a valid cookie within provenFor.
func (p *provenSources) has(a netip.Addr, now int64) bool {
	src := ratelimit.Source(a)
	s := p.shard(src)
	s.mu.Lock()
	t, ok := s.m[src]
	s.mu.Unlock()
	return ok && now-t <= int64(provenFor)
}
