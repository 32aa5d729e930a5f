package rendezvous

import (
	"context"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/wire"
)

// benchPeers registers n peers and returns them with valid cookies.
func benchPeers(b *testing.B, f *fixture, n int) []*peer {
	peers := make([]*peer, n)
	for i := range peers {
		p := f.newPeer(fmt.Sprintf("203.0.%d.%d:%d", 113+i/60000, i%250+1, 1024+i))
		f.register(p, wire.Register{AllowAny: true,
			Candidates: []netip.AddrPort{netip.MustParseAddrPort("100.64.1.2:4000"), netip.MustParseAddrPort("[fd00::2]:4000")},
			Tickets:    [][]byte{make([]byte, 99)}})
		peers[i] = p
	}
	return peers
}

// runBatches feeds pre-sealed requests to handle, sealing each batch with the
// timer stopped, so only the server's work is measured.
func runBatches(b *testing.B, f *fixture, peers []*peer, mk func(p *peer) wire.Body, wantReplies int) {
	const batch = 2048
	type item struct {
		from netip.AddrPort
		pkt  []byte
	}
	items := make([]item, 0, batch)
	sinceRegister := time.Duration(0)
	var cpu cpuMeter
	refill := func() {
		cpu.stop()
		b.StopTimer()
		f.clock.Add(time.Second)
		if sinceRegister += time.Second; sinceRegister > time.Minute {
			// Keep every peer registered (TTL 90 s of fake time).
			for _, p := range peers {
				f.register(p, wire.Register{AllowAny: true})
			}
			sinceRegister = 0
		}
		items = items[:0]
		for i := range batch {
			p := peers[i%len(peers)]
			p.cookie = f.srv.cfg.Cookies.Make(p.addr)
			items = append(items, item{p.addr, f.seal(p, mk(p))})
		}
		b.StartTimer()
		cpu.start()
	}
	ctx := context.Background()
	sc := newScratch()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%batch == 0 {
			refill()
		}
		it := items[i%batch]
		if out := f.srv.handle(ctx, sc, it.from, it.pkt); len(out) != wantReplies {
			b.Fatalf("%d replies, want %d", len(out), wantReplies)
		}
		i++
	}
	cpu.stop()
	cpu.report(b, i)
}

func benchFixture(b *testing.B) *fixture {
	return newFixture(b, func(c *Config) {
		c.RateLimit.PerSecond = -1
		c.TURNSecret = nil
	})
}

// BenchmarkRegister: a sealed Register with a valid cookie in, a sealed
// Registered out (box open, cookie HMAC, replay check, registry put, box
// seal), across 1000 peers whose keys are cached.
func BenchmarkRegister(b *testing.B) {
	f := benchFixture(b)
	peers := benchPeers(b, f, 1000)
	runBatches(b, f, peers, func(p *peer) wire.Body {
		return &wire.Register{Cookie: p.cookie, AllowAny: true, NAT: wire.NATEndpointIndep,
			Candidates: []netip.AddrPort{netip.MustParseAddrPort("100.64.1.2:4000")}}
	}, 1)
}

// BenchmarkRegisterTURN adds the TURN REST-API credentials (HMAC-SHA1).
func BenchmarkRegisterTURN(b *testing.B) {
	f := newFixture(b, func(c *Config) { c.RateLimit.PerSecond = -1 })
	peers := benchPeers(b, f, 1000)
	runBatches(b, f, peers, func(p *peer) wire.Body {
		return &wire.Register{Cookie: p.cookie, AllowAny: true}
	}, 1)
}

// BenchmarkConnect: a sealed Connect in, a Punch to the target and a
// ConnectReply to the sender out (two registry lookups, two seals).
func BenchmarkConnect(b *testing.B) {
	f := benchFixture(b)
	peers := benchPeers(b, f, 1000)
	runBatches(b, f, peers, func(p *peer) wire.Body {
		target := peers[int(p.addr.Port())%len(peers)]
		if target == p {
			target = peers[(int(p.addr.Port())+1)%len(peers)]
		}
		return &wire.Connect{Cookie: p.cookie, TxID: 1, Target: target.id.ID()}
	}, 2)
}

// BenchmarkChallenge: a Register without the cookie proof (what a flood
// from spoofed sources costs): answered with a CookieReply, no box opened.
func BenchmarkChallenge(b *testing.B) {
	f := benchFixture(b)
	peers := benchPeers(b, f, 1000)
	runBatches(b, f, peers, func(p *peer) wire.Body { return &wire.Register{AllowAny: true} }, 1)
}

func BenchmarkSTUN(b *testing.B) {
	f := benchFixture(b)
	req := []byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	from := netip.MustParseAddrPort("203.0.113.5:40000")
	sc := newScratch()
	b.ReportAllocs()
	var cpu cpuMeter
	cpu.start()
	n := 0
	for b.Loop() {
		if out := f.srv.handle(context.Background(), sc, from, req); len(out) != 1 {
			b.Fatal("no answer")
		}
		n++
	}
	cpu.stop()
	cpu.report(b, n)
}

// BenchmarkBadBox: garbage under a cached sender key (the cheapest
// authenticated rejection).
func BenchmarkBadBox(b *testing.B) {
	f := benchFixture(b)
	p := benchPeers(b, f, 1)[0]
	pkt := f.seal(p, &wire.Register{Cookie: p.cookie})
	pkt[len(pkt)-1] ^= 1
	sc := newScratch()
	b.ReportAllocs()
	for b.Loop() {
		f.srv.handle(context.Background(), sc, p.addr, pkt)
	}
}

// BenchmarkFirstContact: a Register, proving its source's cookie, from a
// peer the server has never met (its shared key is computed: one X25519).
func BenchmarkFirstContact(b *testing.B) {
	f := newFixture(b, func(c *Config) {
		// One source brings every new key: lift its limits.
		c.RateLimit.PerSecond = -1
		c.KeyMissRate.PerSecond = -1
		c.RegisterRate.PerSecond = -1
		c.TURNSecret = nil
	})
	const batch = 256
	pkts := make([][]byte, 0, batch)
	var cpu cpuMeter
	from := netip.MustParseAddrPort("203.0.113.5:40000")
	sc := newScratch()
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%batch == 0 {
			cpu.stop()
			b.StopTimer()
			pkts = pkts[:0]
			cookie := f.srv.cfg.Cookies.Make(from)
			for range batch {
				pkts = append(pkts, f.seal(f.newPeer("203.0.113.5:40000"), &wire.Register{AllowAny: true, Cookie: cookie}))
			}
			b.StartTimer()
			cpu.start()
		}
		if out := f.srv.handle(ctx, sc, from, pkts[i%batch]); len(out) != 1 {
			b.Fatalf("%d replies", len(out))
		}
		i++
	}
	cpu.stop()
	cpu.report(b, i)
}

// cpuMeter adds up the process CPU time (user+system, all threads: GC
// included) over the timed parts of a benchmark. On a shared machine it is
// steadier than wall time, which counts the time other processes run.
type cpuMeter struct {
	total, at time.Duration
	running   bool
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (c *cpuMeter) start() { c.at, c.running = processCPU(), true }

func (c *cpuMeter) stop() {
	if c.running {
		c.total += processCPU() - c.at
		c.running = false
	}
}

// report adds cpu-ns/op and the requests one CPU second handles.
func (c *cpuMeter) report(b *testing.B, ops int) {
	if ops == 0 || c.total <= 0 {
		return
	}
	per := float64(c.total.Nanoseconds()) / float64(ops)
	b.ReportMetric(per, "cpu-ns/op")
	b.ReportMetric(1e9/per, "req/cpu-s")
}
