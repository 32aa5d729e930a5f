package crypto

import (
	"hash/maphash"
	"sync"
)

const keyCacheShards = 64

// KeyCache holds the box keys shared with recently seen peers, so that only
// a cache miss costs an X25519 scalar multiplication. It is safe for
// concurrent use. It is bounded: a full shard forgets, among a few entries
// (Go's map iteration order), one never used since it was added, else the
// least used (halving the counts of the others), so keys that peers keep
// using outlive a stream of keys used once.
//
// A stranger may add keys of its choice (the rendezvous adds only keys that
// opened a box from a source with a valid cookie; the path layer adds the
// keys of the peers the rendezvous introduces); they are forgotten before
// keys in use. Shards are picked by a hash keyed with a per-process secret:
// the sender chooses its key's bytes, and must not be able to aim every key
// at one shard.
type KeyCache struct {
	perShard int
	seed     maphash.Seed
	shards   [keyCacheShards]keyShard
}

type keyShard struct {
	mu sync.Mutex
	m  map[PeerID]keyEntry
}

type keyEntry struct {
	key  [32]byte
	hits uint8 // gets since added, saturating, halved when spared
}

// evictLook is how many entries an eviction looks at, at most.
const evictLook = 8

// NewKeyCache returns a cache that holds about size keys (at least one per
// shard).
func NewKeyCache(size int) *KeyCache {
	c := &KeyCache{perShard: max(1, size/keyCacheShards), seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = make(map[PeerID]keyEntry)
	}
	return c
}

func (c *KeyCache) shard(id *PeerID) *keyShard {
	return &c.shards[c.shardIndex(id)]
}

// shardIndex picks id's shard by a hash keyed with the cache's own secret
// seed.
func (c *KeyCache) shardIndex(id *PeerID) uint64 {
	return maphash.Bytes(c.seed, id[:]) % keyCacheShards
}

// Get returns the cached key shared with id.
func (c *KeyCache) Get(id *PeerID) ([32]byte, bool) {
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

// Put caches the key shared with id.
func (c *KeyCache) Put(id *PeerID, k *[32]byte) {
	s := c.shard(id)
	s.mu.Lock()
	if _, ok := s.m[*id]; !ok && len(s.m) >= c.perShard {
		s.evictLocked()
	}
	s.m[*id] = keyEntry{key: *k}
	s.mu.Unlock()
}

// evictLocked removes the first of a few entries never used since it was added;
// when all it looked at were used, it removes the least used and halves
// the counts of the others.
func (s *keyShard) evictLocked() {
	var (
		looked [evictLook]PeerID
		n      int
		victim PeerID
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
