package discovery

import (
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
)

const (
	numShards = 256
	// sweepPerPut is how many arena entries each Put examines for expiry in
	// its shard: amortised, bounded work that keeps a busy shard clean.
	sweepPerPut = 4
	// sweepPerTick is how many entries Sweep examines in each shard.
	sweepPerTick = 2048
	// SweepInterval is how often Run sweeps.
	SweepInterval = time.Second
)

// Memory is the in-process registry, the default for a single rendezvous
// instance. It is safe for concurrent use.
//
// Records are kept in their compact stored form (see codec.go) in 256
// shards, each with its own lock, byte arena and hash table, indexed by the
// overlay address. Get by peer ID derives the address from the ID (one
// SHA-256, about 80 ns) and uses the same index, so one index serves both
// lookups. Growing or compacting a shard copies that shard under its lock:
// 1/256 of the registry, about 1 MB per million peers.
//
// Lifecycle: NewMemory starts no goroutine. Expired records are invisible at
// once (lazy expiry); their memory is reclaimed by the bounded sweep each Put
// does in its shard, by Sweep, and by Run, which sweeps every SweepInterval
// until its context ends: run it with `go m.Run(ctx)` where Puts may stop
// for long (Len counts records not yet swept). Close drops every record.
//
// SetMaxRecords caps it (the rendezvous command sets DefaultMaxRecords): a
// new peer then evicts the registrations closest to expiry, never a
// refresh.
type Memory struct {
	now      func() time.Time
	seed     maphash.Seed
	perShard int // records a shard keeps; 0: no cap
	evicted  atomic.Uint64
	epoch    atomic.Uint64 // see Epoch
	changes  atomic.Uint64 // Puts and Deletes, for snapshots
	shards   [numShards]shard
}

// DefaultMaxRecords is the registry cap the rendezvous command sets by
// default: a typical record takes about 250 bytes in memory and the largest
// a registration frame can carry about 1.7 KB, so 2,097,152 records take
// about 512 MiB, 3.5 GiB if every peer sent the largest.
const DefaultMaxRecords = 1 << 21

// SetMaxRecords caps the registry at about n records (n/256 per shard, at
// least one): a Put of a new peer into a full shard first evicts that
// shard's expired records or, when none is, the one closest to expiry. A
// refresh of a registered peer is never refused or evicted for room. n <= 0
// removes the cap. Call it before the registry is used.
func (m *Memory) SetMaxRecords(n int) {
	if n <= 0 {
		m.perShard = 0
		return
	}
	m.perShard = max(1, n/numShards)
}

// Evicted counts the live records evicted to make room (the cap reached).
func (m *Memory) Evicted() uint64 { return m.evicted.Load() }

var _ Registry = (*Memory)(nil)

// NewMemory returns an empty registry whose clock is now (time.Now if nil).
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	m := &Memory{now: now, seed: maphash.MakeSeed()}
	m.epoch.Store(newEpoch())
	for i := range m.shards {
		m.shards[i].seed = m.seed
	}
	return m
}

// locate returns the shard and table tag for an overlay address.
func (m *Memory) locate(addr netip.Addr) (*shard, addrKey, uint32) {
	a := addr.As16()
	k := addrKey(a[2:])
	h := hashKey(m.seed, &k)
	return &m.shards[h&(numShards-1)], k, uint32(h >> 32)
}

// Put stores or refreshes rec until ttl from now, unless rec.Sent is not
// later than the live record's (ErrNotNewer; see Registry.Put). IPv6 zones
// in addresses are not kept.
func (m *Memory) Put(_ context.Context, rec Record, ttl time.Duration) error {
	if err := checkPut(rec, ttl); err != nil {
		return err
	}
	var buf [512]byte
	body, err := appendRecord(buf[:0], rec)
	if err != nil {
		return err
	}
	now := m.now().UnixNano()
	exp := now + int64(ttl)
	if exp < now { // overflow: a TTL of centuries
		exp = math.MaxInt64
	}
	sent := sentMillis(rec.Sent)
	s, k, tag := m.locate(rec.ID.OverlayAddr())
	s.mu.Lock()
	if sent > 0 {
		// Compared and written under one lock: see Registry.Put.
		if old, live := s.get(&k, tag, now); live && recordSent(old) >= sent {
			s.mu.Unlock()
			return fmt.Errorf("memory registry: %w", ErrNotNewer)
		}
	}
	m.changes.Add(1)
	ok, evicted := s.put(&k, tag, body, exp, now, m.perShard)
	s.mu.Unlock()
	if evicted > 0 {
		m.evicted.Add(uint64(evicted))
	}
	if !ok {
		return fmt.Errorf("memory registry shard over 4 GiB: %w", ErrUnavailable)
	}
	return nil
}

func checkPut(rec Record, ttl time.Duration) error {
	if rec.ID.IsZero() {
		return fmt.Errorf("zero peer ID: %w", ErrInvalid)
	}
	if ttl <= 0 {
		return fmt.Errorf("ttl %v is not positive: %w", ttl, ErrInvalid)
	}
	return nil
}

// Get returns the live record of id.
func (m *Memory) Get(_ context.Context, id crypto.PeerID) (Record, error) {
	return m.get(id.OverlayAddr(), &id)
}

// GetByAddr returns the live record whose overlay address is addr.
func (m *Memory) GetByAddr(_ context.Context, addr netip.Addr) (Record, error) {
	addr = addr.Unmap()
	if !crypto.IsOverlay(addr) {
		return Record{}, ErrNotFound
	}
	return m.get(addr, nil)
}

// get looks addr up; when id is set the record must also carry that ID
// (two keys sharing an address would need a 112-bit SHA-256 collision, but
// the check costs nothing).
func (m *Memory) get(addr netip.Addr, id *crypto.PeerID) (Record, error) {
	s, k, tag := m.locate(addr)
	now := m.now().UnixNano()
	s.mu.RLock()
	body, ok := s.get(&k, tag, now)
	if ok && id != nil {
		got, _ := recordID(body)
		ok = got == *id
	}
	var b []byte
	if ok {
		b = append([]byte(nil), body...)
	}
	s.mu.RUnlock()
	if !ok {
		return Record{}, ErrNotFound
	}
	rec, err := decodeRecord(b)
	if err != nil {
		return Record{}, fmt.Errorf("memory registry: %w", err)
	}
	return rec, nil
}

// Delete removes the record of id, if any.
func (m *Memory) Delete(_ context.Context, id crypto.PeerID) error {
	m.changes.Add(1)
	s, k, tag := m.locate(id.OverlayAddr())
	s.mu.Lock()
	s.remove(&k, tag)
	s.maybeCompact(m.now().UnixNano())
	s.mu.Unlock()
	return nil
}

// Len counts the records not yet removed: live ones, and expired ones that
// no sweep has reached yet.
func (m *Memory) Len(context.Context) (int, error) {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.RLock()
		n += s.count
		s.mu.RUnlock()
	}
	return n, nil
}

// Ping always succeeds: memory is always there.
func (m *Memory) Ping(context.Context) error { return nil }

// Close drops every record. The registry stays usable (and empty).
func (m *Memory) Close() error {
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		s.table, s.arena, s.count, s.garbage, s.cursor = nil, nil, 0, 0, 0
		s.mu.Unlock()
	}
	return nil
}

// Sweep examines a bounded number of entries in every shard (sweepPerTick
// each), removes the expired ones and compacts shards that are mostly dead.
// It returns how many records it removed.
func (m *Memory) Sweep() int {
	removed := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		now := m.now().UnixNano()
		removed += s.sweep(now, sweepPerTick)
		s.maybeCompact(now)
		s.mu.Unlock()
	}
	return removed
}

// Run calls Sweep every SweepInterval until ctx is done, then returns. It is
// optional (Put sweeps as it goes); the caller owns the goroutine.
func (m *Memory) Run(ctx context.Context) {
	t := time.NewTicker(SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.Sweep()
		}
	}
}
