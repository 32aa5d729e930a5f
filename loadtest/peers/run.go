package peers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"time"
)

// peersResult is everything the run measured.
type peersResult struct {
	opts       peersOpts
	local      bool
	spawned    bool // the server was started by --rendezvous
	regTime    time.Duration
	regMissed  int
	regSent    int64 // datagrams peers sent during the registration phase
	connects   connectResult
	steadyRegs int64 // Registered received during the steady phase
	punches    int64
	sent, recv int64
	rejected   map[string]float64

	// per in-process instance: name, registrations and connects served
	instNames              []string
	instRegs, instConnects []float64

	// external servers' RSS and registered-peers gauge after the steady
	// phase, summed
	rssAfter, peersGauge float64

	// memory per registered peer, bytes; <0 when unknown
	heapPerPeer  float64
	rssPerPeer   float64
	redisPerPeer float64
	note         string
}

// population is the simulated peers: one socket each (simPeer) or many
// per socket (muxPop, --per-source).
type population interface {
	register(ctx, runCtx context.Context, inflight int, timeout time.Duration, progress io.Writer) (time.Duration, int)
	connect(ctx context.Context, workers int, d time.Duration) connectResult
	close()
}

// simPopulation is one socket per peer.
type simPopulation []*simPeer

func (p simPopulation) register(ctx, runCtx context.Context, inflight int, timeout time.Duration, progress io.Writer) (time.Duration, int) {
	return registerAll(ctx, runCtx, p, inflight, timeout, progress)
}

func (p simPopulation) connect(ctx context.Context, workers int, d time.Duration) connectResult {
	return connectLoop(ctx, p, workers, d)
}

func (p simPopulation) close() { closePopulation(p) }

func (p *muxPop) register(ctx, runCtx context.Context, inflight int, timeout time.Duration, progress io.Writer) (time.Duration, int) {
	return p.registerAll(ctx, runCtx, inflight, timeout, progress)
}

func (p *muxPop) connect(ctx context.Context, workers int, d time.Duration) connectResult {
	return p.connectLoop(ctx, workers, d)
}

// newPeersPopulation makes the population --per-source asks for.
func newPeersPopulation(ctx context.Context, o peersOpts, servers []peersServer, cnt *peersCounters, progress io.Writer) (population, error) {
	if o.perSource <= 1 {
		peers, err := newPopulation(ctx, o.count, servers, cnt)
		return simPopulation(peers), err
	}
	if len(servers) != 1 {
		return nil, errors.New("--per-source above 1 takes one server")
	}
	return newMuxPopulation(ctx, o.count, o.perSource, servers[0], o.ids, cnt, progress)
}

// peersBench runs the whole measurement.
func peersBench(ctx context.Context, o peersOpts, progress io.Writer) (*peersResult, error) {
	res := &peersResult{opts: o, local: len(o.servers) == 0, heapPerPeer: -1, rssPerPeer: -1, redisPerPeer: -1}
	var (
		servers []peersServer
		ls      *localServer
		empty   uint64
		redis0  int64
		err     error
	)
	if res.local {
		if empty, err = emptyServerHeap(ctx, o); err != nil {
			return nil, err
		}
		if ls, err = startLocal(ctx, o); err != nil {
			return nil, err
		}
		servers = []peersServer{ls.peersServer}
		redis0 = ls.redisMemory(ctx)
		fmt.Fprintf(progress, "in-process rendezvous on %s: %d instance(s), %s registry\n", ls.addr, len(ls.insts), o.registry)
	} else if servers, err = externalServers(o.servers); err != nil {
		return nil, err
	}
	defer func() {
		if ls != nil {
			ls.stop()
		}
	}()

	var cnt peersCounters
	fmt.Fprintf(progress, "creating %d peers...\n", o.count)
	pop, err := newPeersPopulation(ctx, o, servers, &cnt, progress)
	if err != nil {
		return nil, err
	}
	defer pop.close()
	before := make([]adminSample, len(o.admins))
	for i, a := range o.admins {
		if before[i], err = scrapeAdmin(ctx, a); err != nil {
			return nil, err
		}
	}

	runCtx, stopPeers := context.WithCancel(ctx)
	defer stopPeers()
	fmt.Fprintf(progress, "registering (%d in flight)...\n", o.inflight)
	res.regTime, res.regMissed = pop.register(ctx, runCtx, o.inflight, o.timeout, progress)
	res.regSent = cnt.sent.Load()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	fmt.Fprintf(progress, "registered %d in %v; connecting for %v (%d workers)...\n", o.count-res.regMissed, res.regTime.Round(time.Millisecond), o.duration, o.workers)
	regs0 := cnt.registrations.Load()
	if o.duration > 0 {
		res.connects = pop.connect(ctx, o.workers, o.duration)
	}
	res.steadyRegs = cnt.registrations.Load() - regs0
	time.Sleep(200 * time.Millisecond) // let the last punches land
	res.punches = cnt.punches.Load()
	res.sent, res.recv = cnt.sent.Load(), cnt.recv.Load()
	registered := float64(o.count - res.regMissed)

	if len(o.admins) > 0 {
		var rss, heap float64
		res.rejected = map[string]float64{}
		for i, a := range o.admins {
			after, err := scrapeAdmin(ctx, a)
			if err != nil {
				return nil, err
			}
			rss += after.rss - before[i].rss
			res.rssAfter += after.rss
			res.peersGauge += after.peers
			heap += after.heap - before[i].heap
			res.instNames = append(res.instNames, a)
			res.instRegs = append(res.instRegs, after.regs-before[i].regs)
			res.instConnects = append(res.instConnects, after.connects-before[i].connects)
			for r, n := range after.rejected {
				res.rejected[r] += n - before[i].rejected[r]
			}
		}
		res.rssPerPeer = rss / registered
		res.heapPerPeer = heap / registered
		res.note = "external servers: RSS and heap_alloc deltas from /metrics (heap_alloc includes uncollected garbage)"
	}
	if ls != nil {
		res.rejected = ls.rejected()
		res.instNames, res.instRegs, res.instConnects = ls.served()
		if r1 := ls.redisMemory(ctx); redis0 >= 0 && r1 >= 0 {
			res.redisPerPeer = float64(r1-redis0) / registered
		}
		// The server's own memory: the live heap with it, minus without
		// it, minus what an empty server costs.
		stopPeers()
		ls.halt()
		with := liveHeap()
		ls.stop()
		ls = nil
		without := liveHeap()
		if with > without+empty {
			res.heapPerPeer = float64(with-without-empty) / registered
		}
		res.note = fmt.Sprintf("in-process: live heap of the server(s) and %s registry (after GC) per peer, empty-server cost (%d B) subtracted; peers, servers (and Redis) share %d CPUs", o.registry, empty, runtime.GOMAXPROCS(0))
	}
	return res, nil
}
