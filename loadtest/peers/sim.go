package peers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/rzclient"
	"github.com/keymesh/keymesh/internal/wire"
)

// simPeer is one simulated peer: an rzclient on its own UDP socket bound to
// its own loopback address (so the server sees distinct sources, each with
// its own rate-limit bucket, as real peers behind different NATs).
type simPeer struct {
	id         *crypto.Identity
	conn       *net.UDPConn
	client     *rzclient.Client
	registered chan struct{} // closed at the first Registered
	once       sync.Once
}

// peersCounters are shared by the whole population.
type peersCounters struct {
	sent, recv    atomic.Int64 // datagrams
	registrations atomic.Int64 // Registered received (first and refreshes)
	punches       atomic.Int64
}

// peerSource returns the loopback address of peer i: 127.1.x.y, with x and
// y from 1 to 250.
func peerSource(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 1, byte(i/250 + 1), byte(i%250 + 1)})
}

// peersRaiseNoFile lifts the open-file soft limit to the hard one and checks
// that n sockets fit.
func peersRaiseNoFile(n int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if need := uint64(n) + 256; lim.Cur < need {
		return fmt.Errorf("open-file limit %d is below the %d sockets needed: raise it (ulimit -n %d) or lower --count", lim.Cur, need, need)
	}
	return nil
}

// newPopulation creates n peers, spread round-robin over servers, and starts
// their socket readers (not their registration).
func newPopulation(ctx context.Context, n int, servers []peersServer, cnt *peersCounters) ([]*simPeer, error) {
	if err := peersRaiseNoFile(n); err != nil {
		return nil, err
	}
	peers := make([]*simPeer, n)
	errs := make(chan error, runtime.GOMAXPROCS(0))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range cap(errs) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				p, err := newSimPeer(i, servers[i%len(servers)], cnt)
				if err != nil {
					errs <- err
					return
				}
				peers[i] = p
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		closePopulation(peers)
		return nil, err
	}
	for _, p := range peers {
		go p.read(cnt)
	}
	return peers, nil
}

func newSimPeer(i int, srv peersServer, cnt *peersCounters) (*simPeer, error) {
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return nil, err
	}
	src := netip.AddrPortFrom(peerSource(i), 0)
	if !srv.addr.Addr().IsLoopback() || srv.addr.Addr().Is6() {
		// A remote or IPv6 server cannot answer 127.1.x.y: every peer
		// then shares one source address (and one rate-limit bucket).
		src = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(src))
	if err != nil {
		return nil, fmt.Errorf("peer %d socket on %v: %w", i, src, err)
	}
	_ = conn.SetReadBuffer(64 << 10)
	p := &simPeer{id: id, conn: conn, registered: make(chan struct{})}
	local := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	p.client, err = rzclient.New(rzclient.Config{
		Identity:   id,
		Server:     srv.addr,
		ServerKey:  srv.key,
		AllowAny:   true,
		Candidates: func() []netip.AddrPort { return []netip.AddrPort{local} },
		NAT:        func() wire.NAT { return wire.NATNone },
		Send: func(b []byte, to netip.AddrPort) error {
			cnt.sent.Add(1)
			_, err := conn.WriteToUDPAddrPort(b, to)
			return err
		},
		OnRegistered: func(wire.Registered) {
			cnt.registrations.Add(1)
			p.once.Do(func() { close(p.registered) })
		},
		OnPunch: func(wire.Punch) { cnt.punches.Add(1) },
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	return p, nil
}

func (p *simPeer) read(cnt *peersCounters) {
	buf := make([]byte, wire.MaxFrame)
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		cnt.recv.Add(1)
		p.client.HandleFrame(buf[:n], from)
	}
}

func closePopulation(peers []*simPeer) {
	for _, p := range peers {
		if p != nil {
			p.conn.Close()
		}
	}
}

// registerAll starts every peer's Run with at most inflight registrations
// outstanding and returns how long it took until all were registered (or
// how many were not by the deadline).
func registerAll(ctx, runCtx context.Context, peers []*simPeer, inflight int, timeout time.Duration, progress io.Writer) (time.Duration, int) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sem := make(chan struct{}, inflight)
	var wg sync.WaitGroup
	var missed atomic.Int64
	start := time.Now()
	for i, p := range peers {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			missed.Add(int64(len(peers) - i))
			wg.Wait()
			return time.Since(start), int(missed.Load())
		}
		go p.client.Run(runCtx) //nolint:errcheck // Run returns nil when runCtx ends
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			select {
			case <-p.registered:
			case <-ctx.Done():
				missed.Add(1)
			}
		}()
		if (i+1)%5000 == 0 {
			fmt.Fprintf(progress, "  %d peers started\n", i+1)
		}
	}
	wg.Wait()
	return time.Since(start), int(missed.Load())
}

// connectResult is the steady phase's outcome.
type connectResult struct {
	ok, notFound, noAnswer, other int
	elapsed                       time.Duration
	latencies                     []time.Duration
	firstErr                      error
}

// connectLoop runs workers that each connect a random peer to another until
// the duration is over.
func connectLoop(ctx context.Context, peers []*simPeer, workers int, d time.Duration) connectResult {
	return connectWorkers(ctx, workers, d, func() connectStep {
		return func(ctx context.Context, r *connectResult) {
			a := peers[rand.IntN(len(peers))]
			b := peers[rand.IntN(len(peers))]
			if a == b {
				return
			}
			t0 := time.Now()
			_, err := a.client.ConnectPeer(ctx, b.id.ID())
			switch {
			case err == nil:
				r.ok++
				r.latencies = append(r.latencies, time.Since(t0))
			case ctx.Err() != nil:
				// The phase ended during this connect.
			case errors.Is(err, rzclient.ErrPeerNotFound):
				r.notFound++
			case errors.Is(err, rzclient.ErrNoAnswer):
				r.noAnswer++
			default:
				r.other++
			}
			if err != nil && ctx.Err() == nil && r.firstErr == nil {
				r.firstErr = err
			}
		}
	})
}

// connectStep is one connect of a worker of connectWorkers, counted in r.
type connectStep func(ctx context.Context, r *connectResult)

// connectWorkers runs workers, each with its own step from newStep, that
// take steps until d is over, and adds up what they counted.
func connectWorkers(ctx context.Context, workers int, d time.Duration, newStep func() connectStep) connectResult {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var mu sync.Mutex
	var res connectResult
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		step := newStep()
		wg.Go(func() {
			var r connectResult
			for ctx.Err() == nil {
				step(ctx, &r)
			}
			mu.Lock()
			res.ok += r.ok
			res.notFound += r.notFound
			res.noAnswer += r.noAnswer
			res.other += r.other
			res.latencies = append(res.latencies, r.latencies...)
			if res.firstErr == nil {
				res.firstErr = r.firstErr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	slices.Sort(res.latencies)
	return res
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return sorted[i]
}
