package discovery

import (
	"encoding/binary"
	"hash/maphash"
	"math"
	"sync"

	"golang.org/x/sys/cpu"
)

// A shard holds the records whose address key hashes to it, packed into one
// byte arena and found through one open-addressing table. Nothing in a shard
// holds a Go pointer per record, so the garbage collector never scans the
// records, and a record costs its encoded bytes, a 24-byte header, an 8-byte
// table bucket at a load of at most 3/4, and the arena's growth slack (it
// grows by an eighth). A typical registration (two candidates, one 99-byte
// ticket) takes about 250 bytes of heap, against about 570 for a record in
// Go maps (BenchmarkFootprint).
//
// Arena entry layout:
//
//	[0:8)   expiry, Unix nanoseconds, little endian; deadMark once removed
//	[8:10)  body length n
//	[10:24) address key: the 14 bytes of the overlay address after fd4b
//	[24:24+n) body: the record in the stored form of codec.go
//
// A refresh whose body keeps its length is written in place; otherwise the
// old entry is marked dead and a new one appended. When dead bytes outweigh
// live ones the shard is compacted: live entries are copied to a new arena
// and the table rebuilt at the right size. A sweep walks the arena from a
// cursor, a bounded number of entries at a time, removing expired entries.
//
// Table buckets are tag<<32 | (offset+1), 0 meaning empty. The tag is the
// high half of the key's seeded hash; its low bits are the home bucket, so a
// bucket can be moved (growing, backward-shift deletion) without rehashing.
type shard struct {
	mu      sync.RWMutex
	seed    maphash.Seed
	table   []uint64
	arena   []byte
	count   int // entries in the table, live or expired but not yet swept
	garbage int // bytes of dead entries in the arena
	cursor  int // sweep position in the arena
	_       cpu.CacheLinePad
}

// addrKey is the part of an overlay address that varies: 112 bits of the
// SHA-256 of the peer's key.
type addrKey [14]byte

const (
	hdrExpires = 0
	hdrLen     = 8
	hdrKey     = 10
	hdrSize    = 24

	deadMark = math.MinInt64

	minTable = 8
	// compactMin is the least garbage worth a compaction.
	compactMin = 4 << 10
	// arenaStep is the least an arena grows by.
	arenaStep = 2 << 10
	// maxArena keeps offsets (plus one) within 32 bits.
	maxArena = math.MaxUint32 - 1
)

func hashKey(seed maphash.Seed, k *addrKey) uint64 { return maphash.Bytes(seed, k[:]) }

func (s *shard) expires(off int) int64 {
	return int64(binary.LittleEndian.Uint64(s.arena[off+hdrExpires:]))
}

func (s *shard) setExpires(off int, exp int64) {
	binary.LittleEndian.PutUint64(s.arena[off+hdrExpires:], uint64(exp))
}

func (s *shard) bodyLen(off int) int {
	return int(binary.LittleEndian.Uint16(s.arena[off+hdrLen:]))
}

func (s *shard) body(off int) []byte {
	return s.arena[off+hdrSize : off+hdrSize+s.bodyLen(off)]
}

func (s *shard) key(off int) (k addrKey) {
	copy(k[:], s.arena[off+hdrKey:])
	return k
}

// lookup returns the bucket and arena offset of k, or bucket -1.
func (s *shard) lookup(k *addrKey, tag uint32) (bucket, off int) {
	if len(s.table) == 0 {
		return -1, 0
	}
	mask := len(s.table) - 1
	for i := int(tag) & mask; ; i = (i + 1) & mask {
		b := s.table[i]
		if b == 0 {
			return -1, 0
		}
		if uint32(b>>32) == tag {
			off := int(uint32(b)) - 1
			if addrKey(s.arena[off+hdrKey:off+hdrKey+len(k)]) == *k {
				return i, off
			}
		}
	}
}

// place puts bucket value b into table t (which has a free bucket).
func place(t []uint64, b uint64) {
	mask := len(t) - 1
	i := int(b>>32) & mask
	for t[i] != 0 {
		i = (i + 1) & mask
	}
	t[i] = b
}

func tableSizeFor(n int) int {
	size := minTable
	for size*3 < n*4+4 { // keep the load at most 3/4
		size *= 2
	}
	return size
}

// insert adds a bucket for an entry not yet in the table.
func (s *shard) insert(tag uint32, off int) {
	if (s.count+1)*4 > len(s.table)*3 {
		nt := make([]uint64, tableSizeFor(s.count+1))
		for _, b := range s.table {
			if b != 0 {
				place(nt, b)
			}
		}
		s.table = nt
	}
	place(s.table, uint64(tag)<<32|uint64(off+1))
	s.count++
}

// removeBucket empties bucket i, shifting later buckets of its probe run
// back so that lookups never stop early (no tombstones).
func (s *shard) removeBucket(i int) {
	t := s.table
	mask := len(t) - 1
	for j := i; ; {
		j = (j + 1) & mask
		b := t[j]
		if b == 0 {
			break
		}
		home := int(b>>32) & mask
		// The entry at j may move to the hole at i unless its home lies
		// cyclically in (i, j].
		if i <= j {
			if i < home && home <= j {
				continue
			}
		} else if i < home || home <= j {
			continue
		}
		t[i] = b
		i = j
	}
	t[i] = 0
	s.count--
}

// kill marks the entry at off dead (its bucket is handled by the caller).
func (s *shard) kill(off int) {
	s.setExpires(off, deadMark)
	s.garbage += hdrSize + s.bodyLen(off)
}

// appendEntry adds an entry to the arena and returns its offset, or -1 when
// the arena cannot grow further.
func (s *shard) appendEntry(k *addrKey, body []byte, exp int64) int {
	off := len(s.arena)
	need := off + hdrSize + len(body)
	if need > maxArena {
		return -1
	}
	if need > cap(s.arena) {
		// Grow by an eighth (append would add a quarter or more): the slack
		// is what a large registry wastes, copying is cheap.
		c := max(need, cap(s.arena)+max(cap(s.arena)/8, arenaStep))
		na := make([]byte, off, c)
		copy(na, s.arena)
		s.arena = na
	}
	s.arena = binary.LittleEndian.AppendUint64(s.arena, uint64(exp))
	s.arena = binary.LittleEndian.AppendUint16(s.arena, uint16(len(body)))
	s.arena = append(s.arena, k[:]...)
	s.arena = append(s.arena, body...)
	return off
}

// put stores body under k, expiring at exp. A new key in a shard holding
// limit entries (limit > 0) first makes room (see makeRoom); it returns how
// many live entries that evicted. It reports false when the shard is over
// 4 GiB.
func (s *shard) put(k *addrKey, tag uint32, body []byte, exp, now int64, limit int) (bool, int) {
	s.sweep(now, sweepPerPut)
	bucket, off := s.lookup(k, tag)
	if bucket >= 0 && s.bodyLen(off) == len(body) {
		s.setExpires(off, exp)
		copy(s.body(off), body)
		return true, 0
	}
	evicted := 0
	if bucket < 0 && limit > 0 && s.count >= limit {
		evicted = s.makeRoom(now)
	}
	if s.garbage > compactMin && s.garbage*2 > len(s.arena) {
		s.compact(now)
		bucket, off = s.lookup(k, tag)
	}
	noff := s.appendEntry(k, body, exp)
	if noff < 0 {
		return false, evicted
	}
	if bucket >= 0 {
		s.kill(off)
		s.table[bucket] = uint64(tag)<<32 | uint64(noff+1)
	} else {
		s.insert(tag, noff)
	}
	return true, evicted
}

// makeRoom removes every expired entry of a full shard or, when none is
// expired, the live ones closest to expiry (the oldest registrations: all
// share one TTL): those in the first 1/32 of the span of expiries, at most
// 1/32 of the shard and at least one, so that a stream of new peers pays
// for a scan of the shard only every so many Puts. It returns how many
// live entries it removed.
func (s *shard) makeRoom(now int64) int {
	var victims []int // arena offsets
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	for _, b := range s.table {
		if b == 0 {
			continue
		}
		off := int(uint32(b)) - 1
		exp := s.expires(off)
		if exp <= now {
			victims = append(victims, off)
			continue
		}
		lo, hi = min(lo, exp), max(hi, exp)
	}
	live := 0
	if len(victims) == 0 && lo <= hi {
		limit := max(1, s.count/32)
		cut := lo + (hi-lo)/32
		for _, b := range s.table {
			if b == 0 || len(victims) >= limit {
				continue
			}
			if off := int(uint32(b)) - 1; s.expires(off) <= cut {
				victims = append(victims, off)
			}
		}
		live = len(victims)
	}
	for _, off := range victims {
		k := s.key(off)
		if bucket, boff := s.lookup(&k, uint32(hashKey(s.seed, &k)>>32)); bucket >= 0 && boff == off {
			s.removeBucket(bucket)
			s.kill(off)
		}
	}
	return live
}

// get returns the body stored under k if it is live at now.
func (s *shard) get(k *addrKey, tag uint32, now int64) ([]byte, bool) {
	bucket, off := s.lookup(k, tag)
	if bucket < 0 || s.expires(off) <= now {
		return nil, false
	}
	return s.body(off), true
}

// remove deletes the entry under k, if any.
func (s *shard) remove(k *addrKey, tag uint32) {
	if bucket, off := s.lookup(k, tag); bucket >= 0 {
		s.removeBucket(bucket)
		s.kill(off)
	}
}

// sweep examines up to budget arena entries from the cursor, removing the
// expired ones; it stops at the end of the arena and starts over from the
// beginning next time. It returns how many entries it removed.
func (s *shard) sweep(now int64, budget int) int {
	removed := 0
	for ; budget > 0; budget-- {
		if s.cursor >= len(s.arena) {
			s.cursor = 0
			break
		}
		off := s.cursor
		s.cursor += hdrSize + s.bodyLen(off)
		exp := s.expires(off)
		if exp == deadMark || exp > now {
			continue
		}
		k := s.key(off)
		if bucket, boff := s.lookup(&k, uint32(hashKey(s.seed, &k)>>32)); bucket >= 0 && boff == off {
			s.removeBucket(bucket)
		}
		s.kill(off)
		removed++
	}
	return removed
}

// compact copies the live entries into a new arena sized to fit them and
// rebuilds the table for the live count, dropping expired entries as well.
func (s *shard) compact(now int64) {
	live := len(s.arena) - s.garbage
	na := make([]byte, 0, live+live/8)
	nt := make([]uint64, tableSizeFor(s.count))
	n := 0
	for _, b := range s.table {
		if b == 0 {
			continue
		}
		off := int(uint32(b)) - 1
		if s.expires(off) <= now {
			continue
		}
		size := hdrSize + s.bodyLen(off)
		noff := len(na)
		na = append(na, s.arena[off:off+size]...)
		place(nt, b&^math.MaxUint32|uint64(noff+1))
		n++
	}
	s.arena, s.table, s.count, s.garbage, s.cursor = na, nt, n, 0, 0
}

// maybeCompact compacts when dead bytes outweigh live ones, when the table
// is far larger than the live count needs, or when nothing is left.
func (s *shard) maybeCompact(now int64) {
	if s.count == 0 && len(s.arena) > 0 {
		s.arena, s.table, s.garbage, s.cursor = nil, nil, 0, 0
		return
	}
	if (s.garbage > compactMin && s.garbage*2 > len(s.arena)) ||
		(len(s.table) > minTable*8 && s.count*8 < len(s.table)) {
		s.compact(now)
	}
}
