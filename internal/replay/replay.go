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
// live ones, and raises the shard's floor past them: from then on stamps
// below the floor are refused as stale, so a replay of a forgotten pair is
// still refused, and only messages stamped more than one generation before
// now (clocks already nearly out of the window) lose anything. Only when the
// generations of the last two widths alone overflow a shard does the cache
// forget single pairs (counted in Stats.Overflowed); a replay of one of
// those within the window would pass.
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
	// ErrStale means the stamp is outside the window, or below the floor
	// the cache raised when it had to forget a generation early.
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
	if b < s.floor {
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
		c.makeRoom(s, floorDiv(t-c.half, c.width), floorDiv(t, c.width))
		if b < s.floor {
			return ErrStale
		}
	}
	g.m[k] = struct{}{}
	s.n++
	return nil
}

// makeRoom frees at least one place in a full shard: expired generations
// first, then the oldest live ones older than the last two widths (raising
// the floor past them), then single pairs of the largest generation.
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
	// floor was raised past them: their replays are refused as stale).
	Raised uint64
	// Overflowed counts pairs forgotten while their stamps were recent
	// (a replay of one of them within the window would pass).
	Overflowed uint64
}

// Stats returns the pressure counters.
func (c *Cache) Stats() Stats {
	return Stats{Raised: c.raised.Load(), Overflowed: c.overflow.Load()}
}
