// Package replay rejects repeated messages: a bounded, sharded cache of the
// (sender, nonce) pairs accepted within a time window. Messages older than
// the window are refused by their timestamp before they get here, so the
// cache only has to remember one window's worth of pairs.
//
// Entries are kept in two generations per shard. A generation is retired
// after one window and dropped after two, so every pair is remembered for at
// least one full window (and at most two) without per-entry timestamps.
// Keys are 64-bit keyed hashes (hash/maphash with a per-cache random seed):
// an outsider cannot aim collisions, and an accidental one, which would
// refuse a fresh message once, is about as likely as guessing the seed.
package replay

import (
	"errors"
	"hash/maphash"
	"sync"
	"time"
)

// Errors returned by Check.
var (
	// ErrReplay means the pair was seen within the window.
	ErrReplay = errors.New("replayed message")
	// ErrFull means the cache holds its maximum and cannot remember
	// another pair: the message is refused rather than let a replay pass.
	ErrFull = errors.New("replay cache full")
)

const numShards = 32

// Cache remembers (sender, nonce) pairs. It is safe for concurrent use.
type Cache struct {
	seed     maphash.Seed
	window   int64 // nanoseconds
	perShard int
	shards   [numShards]shard
}

type shard struct {
	mu        sync.Mutex
	cur, prev map[uint64]struct{}
	start     int64 // when cur began (Unix ns); 0 = never used
}

// New returns a cache that remembers each pair for at least window and holds
// at most max pairs (split evenly across shards; at least one per shard).
func New(window time.Duration, max int) *Cache {
	if window <= 0 {
		window = time.Minute
	}
	per := max / numShards
	if per < 1 {
		per = 1
	}
	c := &Cache{seed: maphash.MakeSeed(), window: int64(window), perShard: per}
	for i := range c.shards {
		c.shards[i].cur = make(map[uint64]struct{})
		c.shards[i].prev = make(map[uint64]struct{})
	}
	return c
}

// Check records the pair (sender, nonce) seen at now. It returns nil for a
// pair not seen within the window, ErrReplay for one that was, and ErrFull
// when the cache cannot take another pair.
func (c *Cache) Check(now time.Time, sender, nonce []byte) error {
	var h maphash.Hash
	h.SetSeed(c.seed)
	h.Write(sender)
	h.Write(nonce)
	k := h.Sum64()
	s := &c.shards[k%numShards]
	t := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rotate(t, c.window)
	if _, ok := s.cur[k]; ok {
		return ErrReplay
	}
	if _, ok := s.prev[k]; ok {
		return ErrReplay
	}
	if len(s.cur) >= c.perShard {
		return ErrFull
	}
	s.cur[k] = struct{}{}
	return nil
}

// rotate retires generations that are a window or two old.
func (s *shard) rotate(now, window int64) {
	switch age := now - s.start; {
	case s.start == 0:
		s.start = now
	case age >= 2*window:
		clear(s.cur)
		clear(s.prev)
		s.start = now
	case age >= window:
		clear(s.prev)
		s.prev, s.cur = s.cur, s.prev
		s.start += window
		// A clock far behind start (set back) keeps the generations as
		// they are: entries then live longer, never shorter.
	}
}

// Len returns the number of pairs remembered (both generations).
func (c *Cache) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.cur) + len(s.prev)
		s.mu.Unlock()
	}
	return n
}
