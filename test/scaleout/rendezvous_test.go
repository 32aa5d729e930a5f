//go:build linux

package scaleout_test

import (
	"context"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/redistest"
)

// TestAnycastRendezvous runs three rendezvous processes on one UDP address
// (SO_REUSEPORT) with one Redis: the kernel spreads 30 peers over them;
// peers registered through one instance are connected by peers talking to
// another (the admin metrics say which instance served each step); then
// one instance is killed and every peer must be reachable again, through
// the survivors, within one refresh interval.
func TestAnycastRendezvous(t *testing.T) {
	const numPeers = 30
	rd := redistest.Start(t)
	g := startRendezvousGroup(t, 3, rd.Addr())
	peers := startPeers(t, numPeers, g.addr, g.key)

	// The kernel hashed the peers' flows over the three sockets: every
	// instance took some registrations.
	on := map[string][]*simPeer{}
	for _, p := range peers {
		on[p.instance()] = append(on[p.instance()], p)
	}
	var names []string
	var counts []float64
	for _, in := range g.instances {
		names = append(names, in.name)
		counts = append(counts, float64(len(on[in.name])))
	}
	t.Logf("peers per instance: %s", fmtCounts(names, counts))
	if len(on) != 3 {
		t.Fatalf("peers registered through %d instances, want all 3: %s", len(on), fmtCounts(names, counts))
	}
	for _, in := range g.instances {
		m := scrape(t, in.admin)
		// Each instance counted at least the registrations of its own
		// peers (refreshes add more) ...
		if got, want := m[mRegistrations], float64(len(on[in.name])); got < want {
			t.Errorf("%s registrations_total %v, want at least its %v peers", in.name, got, want)
		}
		// ... and sees the whole shared index, not only its own peers
		// (a HyperLogLog count: allow 2 off).
		if got := m[mPeers]; got < numPeers-2 || got > numPeers+2 {
			t.Errorf("%s registered_peers %v, want the shared %d", in.name, got, numPeers)
		}
	}

	t.Run("cross-instance connects", func(t *testing.T) {
		// For every ordered pair of instances (i, j): a peer talking to i
		// connects a peer registered through j. Only i may count the
		// connect and send the punch; j never hears of it.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for _, from := range g.instances {
			for _, to := range g.instances {
				if from == to {
					continue
				}
				a, b := on[from.name][0], on[to.name][0]
				before := scrapeAll(t, g, mConnectsFound, mPunches)
				if err := connect(ctx, a, b); err != nil {
					t.Fatalf("peer %d (via %s) -> peer %d (registered via %s): %v", a.idx, from.name, b.idx, to.name, err)
				}
				after := scrapeAll(t, g, mConnectsFound, mPunches)
				for _, in := range g.instances {
					want := 0.0
					if in == from {
						want = 1
					}
					for _, name := range []string{mConnectsFound, mPunches} {
						if d := after[in.name][name] - before[in.name][name]; d != want {
							t.Errorf("%s -> %s: %s %s rose by %v, want %v", from.name, to.name, in.name, name, d, want)
						}
					}
				}
			}
		}
	})

	t.Run("every peer reaches the next", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for i, p := range peers {
			if err := connect(ctx, p, peers[(i+1)%len(peers)]); err != nil {
				t.Fatalf("peer %d -> %d: %v", i, (i+1)%len(peers), err)
			}
		}
	})

	t.Run("kill an instance", func(t *testing.T) {
		// Kill the instance that serves the most peers.
		victim := g.instances[0]
		for _, in := range g.instances {
			if len(on[in.name]) > len(on[victim.name]) {
				victim = in
			}
		}
		orphans := len(on[victim.name])
		killed := time.Now()
		if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-victim.exited

		// Every peer must be reachable again: some other peer's connect
		// to it (through whichever survivor the kernel now picks)
		// succeeds and its punch arrives. Rounds until all are, bounded.
		reach := make([]time.Duration, len(peers))
		ok := make([]bool, len(peers))
		ctx, cancel := context.WithTimeout(context.Background(), 4*refresh)
		defer cancel()
		for left := len(peers); left > 0 && ctx.Err() == nil; {
			for i, p := range peers {
				if ok[i] {
					continue
				}
				cctx, ccancel := context.WithTimeout(ctx, 500*time.Millisecond)
				err := connect(cctx, peers[(i+7)%len(peers)], p)
				ccancel()
				if err == nil {
					ok[i], reach[i] = true, time.Since(killed)
					left--
				}
			}
		}
		allReach := maxDur(reach)
		for i := range ok {
			if !ok[i] {
				t.Errorf("peer %d (was on %s) not reachable within %v of the kill", i, peers[i].instance(), 4*refresh)
			}
		}

		// And every peer has refreshed its registration through a
		// survivor: the orphans' flows moved to the other sockets.
		rereg := make([]time.Duration, len(peers))
		deadline := killed.Add(4 * refresh)
		for i, p := range peers {
			for {
				if at, ok := p.registeredVia(killed, victim.name); ok {
					rereg[i] = at.Sub(killed)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("peer %d did not re-register through a survivor within %v", i, 4*refresh)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		allRereg := maxDur(rereg)
		t.Logf("killed %s (%d of %d peers): every peer reachable %v after the kill (median %v); every peer re-registered through a survivor %v after (refresh interval %v)",
			victim.name, orphans, len(peers), allReach.Round(time.Millisecond), median(reach).Round(time.Millisecond),
			allRereg.Round(time.Millisecond), refresh)
		if allReach > refresh {
			t.Errorf("every peer reachable only %v after the kill, want within one refresh interval (%v)", allReach, refresh)
		}
		// A refresh lands within one interval; a Register lost in the
		// dying socket costs a retransmission (200 ms, then 400 ms) more.
		if allRereg > refresh+time.Second {
			t.Errorf("every peer re-registered only %v after the kill, want within one refresh interval (%v) and a retransmission", allRereg, refresh)
		}
		// The survivors served it all.
		for _, in := range g.instances {
			if in != victim && !in.running() {
				t.Fatalf("survivor %s exited: %v", in.name, in.waitErr)
			}
		}
	})
}

// scrapeAll scrapes the named samples of every running instance.
func scrapeAll(t *testing.T, g *rzGroup, names ...string) map[string]map[string]float64 {
	t.Helper()
	out := map[string]map[string]float64{}
	for _, in := range g.instances {
		if !in.running() {
			continue
		}
		m := scrape(t, in.admin)
		out[in.name] = map[string]float64{}
		for _, n := range names {
			out[in.name][n] = m[n]
		}
	}
	return out
}

func maxDur(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
