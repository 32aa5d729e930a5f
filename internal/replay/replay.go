// Package replay rejects repeated messages: a bounded, sharded cache of the
// (sender, nonce) pairs accepted within a time window.
//
// A message carries the sender's timestamp (its stamp), and the caller
// accepts only stamps within half a window of its own clock. A pair
// therefore needs remembering only while its stamp is still acceptable:
// the cache files each pair under its stamp's generation (the window is cut
// into 32 of them) and a generation is dropped as soon as its stamps fall
// out of the window. A replay carries the same stamp as the original, so it
// is looked for in one generation only.
//
// The cache is bounded and never refuses a fresh message for lack of room.
// When a shard is full it first drops expired generations, then the oldest
// live ones, raising the shard's floor past them: from then on stamps below
// the floor are refused as stale, so a replay of a forgotten pair is still
// refused. Then it drops the generations furthest in the future, lowering a
// ceiling: stamps at or above it are refused while they are more than one
// generation ahead of now. Under pressure the window so shrinks, down to
// the generations of one width either side of now; messages from clocks
// that close to the truth never lose anything. Only when those three
// generations alone overflow a shard does the cache forget single pairs
// (counted in Stats.Overflowed); a replay of one of those within the window
// would pass. So would, once now catches up with the lowered ceiling, a
// replay of a pair stamped that far ahead before it was dropped (a sender
// whose clock runs ahead by more than a generation).
//
// Keys are 64-bit keyed hashes (hash/maphash with a per-cache random seed):
// an outsider cannot aim collisions, and an accidental one, which would
// refuse a fresh message once, is about as likely as guessing the seed.
package replay

import (
	"errors"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned by Check and CheckStamped.
var (
	// ErrReplay means the pair was seen within the window.
	ErrReplay = errors.New("replayed message")
	// ErrStale means the stamp is outside the window, or beyond the floor
	// or ceiling the cache moved when it had to forget a generation early.
	ErrStale = errors.New("message stamp outside the replay window")
)

const (
	numShards = 32
	// Generations is how many generations one window is cut into.
	Generations = 32
	// ring holds every generation a window can span, plus slack for the
	// window's two partial ends.
	ring = Generations + 3
)

// Cache remembers (sender, nonce) pairs. It is safe for concurrent use.
type Cache struct {
	seed     maphash.Seed
	half     int64 // half the window, ns: the stamps accepted around now
	width    int64 // of one generation, ns
	perShard int
	raised   atomic.Uint64
	overflow atomic.Uint64
	shards   [numShards]shard
}

type shard struct {
	mu    sync.Mutex
	gens  [ring]generation
	n     int   // pairs in all generations
	floor int64 // generations below it are refused (raised by eviction)
	ceil  int64 // generations at or above it are refused while in the future
}

type generation struct {
	id int64 // stamp / width; meaningful while m is not empty
	m  map[uint64]struct{}
}

// New returns a cache for stamps accepted within window/2 of now (window is
// the width of the acceptance span: twice the clock skew allowed), holding
// at most max pairs (split evenly across shards; at least one per shard).
func New(window time.Duration, max int) *Cache {
	if window <= 0 {
		window = time.Minute
	}
	per := max / numShards
	if per < 1 {
		per = 1
	}
	c := &Cache{
		seed:     maphash.MakeSeed(),
		half:     int64(window) / 2,
		width:    int64(window) / Generations,
		perShard: per,
	}
	if c.width < 1 {
		c.width = 1
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.floor = math.MinInt64
		s.ceil = math.MaxInt64
		for g := range s.gens {
			s.gens[g].m = make(map[uint64]struct{})
		}
	}
	return c
}

// Check records the pair (sender, nonce) seen at now, for a caller that does
// not pass the message's stamp: the pair is looked for in every generation
// and filed under the latest stamp now accepts, so it is remembered for a
// whole window. It returns nil for a pair not seen within the window and
// ErrReplay for one that was. Use one of Check and CheckStamped per Cache;
// only CheckStamped refuses replays of generations dropped under pressure.
func (c *Cache) Check(now time.Time, sender, nonce []byte) error {
	t := now.UnixNano()
	return c.insert(c.key(sender, nonce), t, t+c.half, true)
}

func (c *Cache) key(sender, nonce []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(c.seed)
	h.Write(sender)
	h.Write(nonce)
	return h.Sum64()
}

// CheckStamped records the pair (sender, nonce) of a message stamped stamp,
// seen at now. It returns nil for a pair not seen within the window,
// ErrReplay for one that was, and ErrStale for a stamp outside the window or
// below a floor raised under pressure.
func (c *Cache) CheckStamped(now, stamp time.Time, sender, nonce []byte) error {
	t, st := now.UnixNano(), stamp.UnixNano()
	if st < t-c.half || st > t+c.half {
		return ErrStale
	}
	return c.insert(c.key(sender, nonce), t, st, false)
}

// insert files key k under stamp st at time t, unless it is there already
// (in st's generation, or in any live one when anyGen is set).
func (c *Cache) insert(k uint64, t, st int64, anyGen bool) error {
	b := floorDiv(st, c.width)
	s := &c.shards[k%numShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if anyGen {
		lo := floorDiv(t-c.half, c.width)
		for i := range s.gens {
			if g := &s.gens[i]; g.id >= lo {
				if _, ok := g.m[k]; ok {
					return ErrReplay
				}
			}
		}
	}
	cur := floorDiv(t, c.width)
	if b < s.floor || (b >= s.ceil && b > cur+1) {
		return ErrStale
	}
	g := &s.gens[mod(b, ring)]
	if g.id != b {
		// Whatever the slot held is out of the window: live generations
		// span at most Generations+2 ids, fewer than the ring.
		s.n -= len(g.m)
		clear(g.m)
		g.id = b
	}
	if _, ok := g.m[k]; ok {
		return ErrReplay
	}
	if s.n >= c.perShard {
		at := cur
		if anyGen {
			// Check files every pair at the latest stamp: its oldest
			// generations are the ones filed before the latest.
			at = b
		}
		c.makeRoom(s, floorDiv(t-c.half, c.width), at)
		if b < s.floor || (b >= s.ceil && b > cur+1) {
			return ErrStale
		}
	}
	g.m[k] = struct{}{}
	s.n++
	return nil
}

// makeRoom frees at least one place in a full shard: expired generations
// first, then the oldest live ones before cur-1 (raising the floor past
// them), then the furthest ones after cur+1 (lowering the ceiling), then
// single pairs of the largest generation.
func (c *Cache) makeRoom(s *shard, lo, cur int64) {
	for i := range s.gens {
		if g := &s.gens[i]; len(g.m) > 0 && g.id < lo {
			s.n -= len(g.m)
			clear(g.m)
		}
	}
	for s.n >= c.perShard {
		var oldest *generation
		for i := range s.gens {
			g := &s.gens[i]
			if len(g.m) > 0 && g.id < cur-1 && (oldest == nil || g.id < oldest.id) {
				oldest = g
			}
		}
		if oldest == nil {
			break
		}
		s.n -= len(oldest.m)
		clear(oldest.m)
		s.floor = max(s.floor, oldest.id+1)
		c.raised.Add(1)
	}
	for s.n >= c.perShard {
		var furthest *generation
		for i := range s.gens {
			g := &s.gens[i]
			if len(g.m) > 0 && g.id > cur+1 && (furthest == nil || g.id > furthest.id) {
				furthest = g
			}
		}
		if furthest == nil {
			break
		}
		s.n -= len(furthest.m)
		clear(furthest.m)
		if s.ceil <= cur+1 { // an old ceiling that no longer bites
			s.ceil = furthest.id
		}
		s.ceil = min(s.ceil, furthest.id)
		c.raised.Add(1)
	}
	if s.n < c.perShard {
		return
	}
	var largest *generation
	for i := range s.gens {
		if g := &s.gens[i]; largest == nil || len(g.m) > len(largest.m) {
			largest = g
		}
	}
	for k := range largest.m {
		delete(largest.m, k)
		s.n--
		c.overflow.Add(1)
		if s.n < c.perShard {
			break
		}
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

func mod(a, b int64) int {
	m := a % b
	if m < 0 {
		m += b
	}
	return int(m)
}

// Len returns the number of pairs remembered (including generations that
// expired but were not yet reused).
func (c *Cache) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.n
		s.mu.Unlock()
	}
	return n
}

// Stats counts what the cache gave up under pressure.
type Stats struct {
	// Raised counts generations dropped before their stamps expired (the
	// floor was raised or the ceiling lowered past them: their replays are
	// refused as stale).
	Raised uint64
	// Overflowed counts pairs forgotten while their stamps were recent
	// (a replay of one of them within the window would pass).
	Overflowed uint64
}

// Stats returns the pressure counters.
func (c *Cache) Stats() Stats {
	return Stats{Raised: c.raised.Load(), Overflowed: c.overflow.Load()}
}
