package crypto

import (
	"encoding/binary"
	"testing"
)

// TestKeyCacheShardsNotChosen: the sender chooses its key's bytes; keys that
// agree on every byte the old shard pick looked at must still spread over
// the shards (the old cache held only one shard's worth of them).
func TestKeyCacheShardsNotChosen(t *testing.T) {
	const size = 64 * keyCacheShards
	c := NewKeyCache(size)
	var k [32]byte
	for i := range size {
		var id PeerID
		binary.BigEndian.PutUint64(id[:8], uint64(i))
		id[31] = 7
		c.Put(&id, &k)
	}
	held := 0
	for i := range size {
		var id PeerID
		binary.BigEndian.PutUint64(id[:8], uint64(i))
		id[31] = 7
		if _, ok := c.Get(&id); ok {
			held++
		}
	}
	if held < size/2 {
		t.Fatalf("cache holds %d of %d keys sharing a last byte: one shard takes them all", held, size)
	}
}

// TestKeyCacheKeepsUsedKeys: peers that proved an address and keep
// refreshing hold their cached keys against a stream of keys used once (an
// attacker with many real addresses, each within its X25519 budget), so
// they do not fall back to the contested key-miss budget. The old cache
// forgot an arbitrary entry.
func TestKeyCacheKeepsUsedKeys(t *testing.T) {
	const size = 8 * keyCacheShards
	c := NewKeyCache(size)
	var k [32]byte
	id := func(tag byte, i int) *PeerID {
		var p PeerID
		p[0] = tag
		binary.BigEndian.PutUint64(p[1:], uint64(i))
		return &p
	}
	const peers = size / 2
	for i := range peers {
		c.Put(id(1, i), &k)
	}
	for round := range 20 {
		for i := range peers { // every peer refreshes once a round
			if _, ok := c.Get(id(1, i)); !ok {
				c.Put(id(1, i), &k) // a miss: the X25519 again
			}
		}
		for j := range size { // a cache's worth of fresh keys in between
			c.Put(id(2, round*size+j), &k)
		}
	}
	held := 0
	for i := range peers {
		if _, ok := c.Get(id(1, i)); ok {
			held++
		}
	}
	if held < peers*3/4 {
		t.Fatalf("%d of %d refreshing peers kept their keys through the stream of fresh keys", held, peers)
	}
}

// TestKeyCacheShardSecret: the shard of a key is not a function of its
// bytes alone (a stranger who computes it offline could aim keys at one
// shard): two caches place the same keys in different shards.
func TestKeyCacheShardSecret(t *testing.T) {
	a, b := NewKeyCache(1024), NewKeyCache(1024)
	same := 0
	const n = 256
	for i := range n {
		var id PeerID
		binary.BigEndian.PutUint64(id[:8], uint64(i))
		ia := a.shardIndex(&id)
		ib := b.shardIndex(&id)
		if ia == ib {
			same++
		}
	}
	if same > n/4 {
		t.Fatalf("%d of %d keys fell in the same shard of two caches", same, n)
	}
}
