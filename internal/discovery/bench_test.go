package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/testutil/ci"
	"github.com/keymesh/keymesh/internal/testutil/redistest"
)

// naive is the obvious registry, the baseline for Memory: records as Go
// values in a map by ID, a second map by address, one lock.
type naive struct {
	mu     sync.RWMutex
	byID   map[crypto.PeerID]naiveEntry
	byAddr map[netip.Addr]crypto.PeerID
}

type naiveEntry struct {
	rec     discovery.Record
	expires time.Time
}

func newNaive() *naive {
	return &naive{byID: map[crypto.PeerID]naiveEntry{}, byAddr: map[netip.Addr]crypto.PeerID{}}
}

func (n *naive) Put(_ context.Context, rec discovery.Record, ttl time.Duration) error {
	addr := rec.ID.OverlayAddr()
	n.mu.Lock()
	n.byID[rec.ID] = naiveEntry{rec, time.Now().Add(ttl)}
	n.byAddr[addr] = rec.ID
	n.mu.Unlock()
	return nil
}

func (n *naive) Get(_ context.Context, id crypto.PeerID) (discovery.Record, error) {
	n.mu.RLock()
	e, ok := n.byID[id]
	n.mu.RUnlock()
	if !ok || !time.Now().Before(e.expires) {
		return discovery.Record{}, discovery.ErrNotFound
	}
	return e.rec, nil
}

func (n *naive) GetByAddr(ctx context.Context, addr netip.Addr) (discovery.Record, error) {
	n.mu.RLock()
	id, ok := n.byAddr[addr]
	n.mu.RUnlock()
	if !ok {
		return discovery.Record{}, discovery.ErrNotFound
	}
	return n.Get(ctx, id)
}

func (n *naive) Delete(context.Context, crypto.PeerID) error { return nil }
func (n *naive) Len(context.Context) (int, error)            { return len(n.byID), nil }
func (n *naive) Ping(context.Context) error                  { return nil }
func (n *naive) Close() error                                { return nil }

// typicalRecord is a registration as the rendezvous sees it: a reflexive
// address, a LAN IPv4 and a LAN IPv6 candidate, one 99-byte relay ticket.
func typicalRecord(i uint64) discovery.Record {
	r := rand.New(rand.NewPCG(i, 42))
	var rec discovery.Record
	for j := 0; j < 32; j += 8 {
		v := r.Uint64()
		for k := range 8 {
			rec.ID[j+k] = byte(v >> (8 * k))
		}
	}
	rec.Reflexive = netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), uint16(1024+i%60000))
	rec.Candidates = []netip.AddrPort{
		netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}), 41641),
		netip.AddrPortFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(i >> 8), byte(i)}), 41641),
	}
	ticket := make([]byte, 99)
	for k := range ticket {
		ticket[k] = byte(r.Uint32())
	}
	rec.Tickets = [][]byte{ticket}
	rec.NAT = 1
	rec.Policy.AllowAny = true
	rec.Instance = "rdv-eu-1"
	rec.Updated = time.Unix(1_800_000_000, int64(i))
	return rec
}

// cpuTime returns the CPU time this process has used (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// bytesPerPeer registers n typical records in reg and returns the heap the
// registry grew by, per record.
func bytesPerPeer(tb testing.TB, reg discovery.Registry, n int) float64 {
	ctx := context.Background()
	before := heapInUse()
	for i := range n {
		if err := reg.Put(ctx, typicalRecord(uint64(i)), time.Hour); err != nil {
			tb.Fatal(err)
		}
	}
	after := heapInUse()
	runtime.KeepAlive(reg)
	return float64(int64(after)-int64(before)) / float64(n)
}

// TestMemoryFootprint holds Memory to its compactness: well under the
// naive map's bytes per peer.
func TestMemoryFootprint(t *testing.T) {
	if testing.Short() {
		ci.Skip(t, "measures 100k registrations")
	}
	const n = 100_000
	mem := bytesPerPeer(t, discovery.NewMemory(nil), n)
	nv := bytesPerPeer(t, newNaive(), n)
	t.Logf("heap per registered peer: Memory %.0f B, naive maps %.0f B (%.2fx)", mem, nv, nv/mem)
	if mem > 300 || mem > 0.6*nv {
		t.Fatalf("Memory uses %.0f B per peer (naive %.0f B): want under 300 B and 0.6x naive", mem, nv)
	}
}

// BenchmarkFootprint reports heap bytes per registered peer (B/peer) for
// Memory and for the naive maps, 100k typical registrations each.
func BenchmarkFootprint(b *testing.B) {
	const n = 100_000
	for _, impl := range []struct {
		name string
		make func() discovery.Registry
	}{
		{"Memory", func() discovery.Registry { return discovery.NewMemory(nil) }},
		{"Naive", func() discovery.Registry { return newNaive() }},
	} {
		b.Run(impl.name, func(b *testing.B) {
			var sum float64
			for range b.N {
				sum += bytesPerPeer(b, impl.make(), n)
			}
			b.ReportMetric(sum/float64(b.N), "B/peer")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// benchRegistry measures Put, Get and GetByAddr on a registry holding
// `peers` typical registrations, from parallel goroutines.
func benchRegistry(b *testing.B, reg discovery.Registry, peers, parallelism int) {
	ctx := context.Background()
	recs := make([]discovery.Record, peers)
	for i := range recs {
		recs[i] = typicalRecord(uint64(i))
		if err := reg.Put(ctx, recs[i], time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	var sent atomic.Int64
	ops := []struct {
		name string
		do   func(rec discovery.Record) error
	}{
		{"Put", func(rec discovery.Record) error { return reg.Put(ctx, rec, time.Hour) }},
		// A Register's Put: with a send time, later than the stored one
		// (Memory compares under its shard lock, Redis in a script). Two
		// goroutines that drew one peer may land out of order: the later
		// refused is a Put like the others.
		{"PutNewer", func(rec discovery.Record) error {
			rec.Sent = time.UnixMilli(1_800_000_000_000 + sent.Add(1))
			if err := reg.Put(ctx, rec, time.Hour); !errors.Is(err, discovery.ErrNotNewer) {
				return err
			}
			return nil
		}},
		{"Get", func(rec discovery.Record) error { _, err := reg.Get(ctx, rec.ID); return err }},
		{"GetByAddr", func(rec discovery.Record) error {
			_, err := reg.GetByAddr(ctx, rec.ID.OverlayAddr())
			return err
		}},
	}
	for _, op := range ops {
		b.Run(op.name, func(b *testing.B) {
			var next atomic.Uint64
			b.SetParallelism(parallelism)
			cpu0 := cpuTime()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				i := next.Add(1_000_003)
				for pb.Next() {
					i++
					if err := op.do(recs[i%uint64(len(recs))]); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
			// CPU time per operation (this process only) is steadier than
			// wall time when the machine is shared.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

func BenchmarkMemory(b *testing.B) {
	benchRegistry(b, discovery.NewMemory(nil), 100_000, 1)
}

func BenchmarkNaive(b *testing.B) {
	benchRegistry(b, newNaive(), 100_000, 1)
}

// BenchmarkRedis needs redis-server (installed on demand as root; skipped
// otherwise). 16 goroutines per core keep requests in flight.
func BenchmarkRedis(b *testing.B) {
	srv := redistest.Start(b)
	reg, _ := newRedis(b, fmt.Sprintf("redis://%s?pool_size=64", srv.Addr()))
	benchRegistry(b, reg, 10_000, 16)
}
