package rendezvous

import (
	"hash/maphash"
	"sync"

	"github.com/keymesh/keymesh/internal/crypto"
)

const keyCacheShards = 64

// keyCache holds the box keys shared with recently seen peers, so that only
// a cache miss costs an X25519 scalar multiplication. It is bounded: a full
// shard forgets an arbitrary entry (Go's map iteration order) to make room.
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
	m  map[crypto.PeerID][32]byte
}

func newKeyCache(size int) *keyCache {
	c := &keyCache{perShard: max(1, size/keyCacheShards), seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = make(map[crypto.PeerID][32]byte)
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
	k, ok := s.m[*id]
	s.mu.Unlock()
	return k, ok
}

// put caches the key shared with id.
func (c *keyCache) put(id *crypto.PeerID, k *[32]byte) {
	s := c.shard(id)
	s.mu.Lock()
	if _, ok := s.m[*id]; !ok && len(s.m) >= c.perShard {
		for old := range s.m {
			delete(s.m, old)
			break
		}
	}
	s.m[*id] = *k
	s.mu.Unlock()
}
