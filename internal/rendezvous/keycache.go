package rendezvous

import (
	"hash/maphash"
	"sync"

	"github.com/keymesh/keymesh/internal/crypto"
)

const keyCacheShards = 64

// keyCache holds the box keys shared with recently seen peers, so that only
// a cache miss costs an X25519 scalar multiplication. It is bounded: a full
// shard forgets, among a few entries (Go's map iteration order), one never
// used since it was added, else the least used (halving the counts of the
// others), so keys that peers keep using outlive a stream of keys used
// once.
// Only keys that opened a box from a source with a valid cookie are added,
// so forged sender keys from spoofed sources cannot flush it. Shards are
// picked by a hash keyed with a per-process secret: the sender chooses its
// key's bytes, and must not be able to aim every key at one shard.
type keyCache struct {
	perShard int
	seed     maphash.Seed
	shards   [keyCacheShards]keyShard
}

type keyShard struct {
	mu sync.Mutex
	m  map[crypto.PeerID]keyEntry
}

type keyEntry struct {
	key  [32]byte
	hits uint8 // gets since added, saturating, halved when spared
}

// evictLook is how many entries an eviction looks at, at most.
const evictLook = 8

func newKeyCache(size int) *keyCache {
	c := &keyCache{perShard: max(1, size/keyCacheShards), seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = make(map[crypto.PeerID]keyEntry)
	}
	return c
}

func (c *keyCache) shard(id *crypto.PeerID) *keyShard {
	return &c.shards[maphash.Bytes(c.seed, id[:])%keyCacheShards]
}

// get returns the cached key shared with id.
func (c *keyCache) get(id *crypto.PeerID) ([32]byte, bool) {
	s := c.shard(id)
	s.mu.Lock()
	e, ok := s.m[*id]
	if ok && e.hits < 255 {
		e.hits++
		s.m[*id] = e
	}
	s.mu.Unlock()
	return e.key, ok
}

// put caches the key shared with id.
func (c *keyCache) put(id *crypto.PeerID, k *[32]byte) {
	s := c.shard(id)
	s.mu.Lock()
	if _, ok := s.m[*id]; !ok && len(s.m) >= c.perShard {
		s.evict()
	}
	s.m[*id] = keyEntry{key: *k}
	s.mu.Unlock()
}

// evict removes the first of a few entries never used since it was added;
// when all it looked at were used, it removes the least used and halves
// the counts of the others.
func (s *keyShard) evict() {
	var (
		looked [evictLook]crypto.PeerID
		n      int
		victim crypto.PeerID
		least  = 256
	)
	for id, e := range s.m {
		if e.hits == 0 {
			delete(s.m, id)
			return
		}
		if int(e.hits) < least {
			victim, least = id, int(e.hits)
		}
		looked[n] = id
		if n++; n == evictLook {
			break
		}
	}
	delete(s.m, victim)
	for _, id := range looked[:n] {
		if e, ok := s.m[id]; ok {
			e.hits /= 2
			s.m[id] = e
		}
	}
}
