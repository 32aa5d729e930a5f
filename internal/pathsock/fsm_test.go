package pathsock

import (
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/nat"
)

// Failover timings of the per-peer state machine (fsm.go), on virtual
// time: no sleeps, no sockets. fsmSim plays the socket shell (a tick every
// maintenanceTick, probes sent as the tick asks) and the network (a direct
// path that answers probes after rtt while up, a relay that carries the
// peer's traffic while up).

// labNATTimeout is the shortest UDP mapping timeout the lab's NATs are
// given (loadtest faults' nat-idle: 10 s; Linux conntrack's default is
// 30 s): every keepalive cadence must beat it.
const labNATTimeout = 10 * time.Second

var simAddr = netip.MustParseAddrPort("198.51.100.7:4000")

type simProbe struct {
	addr netip.AddrPort
	sent time.Time
}

type fsmSim struct {
	now      time.Time
	pr       *peer
	env      tickEnv
	rtt      time.Duration
	directUp bool // the direct path carries frames
	relayUp  bool // the relay carries frames
	sending  bool // QUIC sends (and, over a live path, gets acknowledgements)
	inflight []simProbe
	probes   []time.Time // when the direct candidate was probed
	relayPr  int         // relay probes sent
	lastRes  tickResult
}

// newFSMSim is a peer on a direct path at simAddr (rtt 1 ms), with a
// relay ticket, traffic flowing.
func newFSMSim() *fsmSim {
	t0 := time.Unix(1_800_000_000, 0)
	pr := &peer{cands: map[netip.AddrPort]*cand{}, tickets: [][]byte{make([]byte, crypto.TicketSize)}, refreshed: t0}
	c := &cand{addr: simAddr, added: t0, lastReply: t0, lastSent: t0, rtt: time.Millisecond}
	pr.cands[simAddr] = c
	pr.route.Store(&route{kind: PathDirect, addr: simAddr})
	return &fsmSim{
		now: t0, pr: pr, rtt: time.Millisecond, directUp: true, relayUp: true, sending: true,
		env: tickEnv{lastSent: t0, lastSeen: t0, lastDirect: t0},
	}
}

func (f *fsmSim) route() *route { return f.pr.route.Load() }

// tick advances one maintenance tick: replies due arrive, data goes out
// (and is acknowledged over a live path), then the peer's tick runs and
// its probes go out.
func (f *fsmSim) tick() tickResult {
	f.now = f.now.Add(maintenanceTick)
	keep := f.inflight[:0]
	for _, p := range f.inflight {
		if at := p.sent.Add(f.rtt); !at.After(f.now) {
			f.pr.mu.Lock()
			if c := f.pr.cands[p.addr]; c != nil {
				f.pr.directReplyLocked(c, f.rtt, nil, at)
			}
			f.pr.mu.Unlock()
			f.env.lastSeen, f.env.lastDirect = at, at
			continue
		}
		keep = append(keep, p)
	}
	f.inflight = keep
	if f.sending {
		f.env.lastSent = f.now
		r := f.route()
		if (r.kind == PathDirect && f.directUp) || (r.kind == PathRelay && f.relayUp) {
			f.env.lastSeen = f.now
			if r.kind == PathDirect {
				f.env.lastDirect = f.now
			}
		}
	}
	f.pr.mu.Lock()
	res := f.pr.tickLocked(f.now, f.env)
	for _, a := range res.probes {
		if c := f.pr.cands[a]; c != nil {
			c.probed(f.now)
		}
		f.probes = append(f.probes, f.now)
		if f.directUp {
			f.inflight = append(f.inflight, simProbe{addr: a, sent: f.now})
		}
	}
	if res.relayProbe {
		f.relayPr++
		f.pr.lastProbeR = f.now
		if f.relayUp {
			f.env.lastSeen = f.now.Add(f.rtt)
		}
	}
	f.pr.mu.Unlock()
	f.lastRes = res
	return res
}

// until ticks until cond holds and returns the virtual time it took;
// limit bounds it.
func (f *fsmSim) until(t *testing.T, what string, limit time.Duration, cond func(tickResult) bool) time.Duration {
	t.Helper()
	start := f.now
	for {
		if cond(f.tick()) {
			return f.now.Sub(start)
		}
		if f.now.Sub(start) > limit {
			t.Fatalf("%s: not within %s of virtual time", what, limit)
		}
	}
}

func (f *fsmSim) warm(d time.Duration) {
	for end := f.now.Add(d); f.now.Before(end); {
		f.tick()
	}
}

// TestFSMDirectCutRelayTakesOver: data flows on a direct path that is then
// cut: within 500 ms the route is the relay, and the tick reports the lost
// route (the shell resends on the relay and reacts to the loss).
func TestFSMDirectCutRelayTakesOver(t *testing.T) {
	f := newFSMSim()
	f.warm(2 * time.Second)
	if f.route().kind != PathDirect {
		t.Fatalf("a healthy direct path was left: %s", f.route().kind)
	}
	f.directUp = false
	took := f.until(t, "relay after a cut", 5*time.Second, func(r tickResult) bool { return r.lost != nil })
	if took > 500*time.Millisecond {
		t.Fatalf("the relay took over %s after the cut, want within 500ms", took)
	}
	if k := f.route().kind; k != PathRelay || f.lastRes.now.kind != PathRelay {
		t.Fatalf("after the cut the route is %s (reported %s), want relay", k, f.lastRes.now.kind)
	}
	if f.lastRes.lost.addr != simAddr {
		t.Fatalf("lost route %v, want the direct path %v", f.lastRes.lost.addr, simAddr)
	}
}

// TestFSMDirectBackUpgrades: after a cut the peer is on the relay; when
// the direct path comes back (the cut lifted 3 s later, as in loadtest
// faults' direct-cut), the route is direct again within a second; a
// direct path that comes back long after the loss, within
// nat.UpgradeInterval.
func TestFSMDirectBackUpgrades(t *testing.T) {
	for _, tc := range []struct {
		name   string
		down   time.Duration
		within time.Duration
	}{
		{"soon after the loss", 3 * time.Second, lostUpgradeInterval + maintenanceTick},
		{"long after the loss", lostUpgradeWindow + time.Minute, nat.UpgradeInterval + maintenanceTick},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFSMSim()
			f.warm(time.Second)
			f.directUp = false
			f.until(t, "relay after a cut", 5*time.Second, func(r tickResult) bool { return r.lost != nil })
			f.warm(tc.down)
			if k := f.route().kind; k != PathRelay {
				t.Fatalf("route %s while the direct path is down", k)
			}
			f.directUp = true
			took := f.until(t, "direct again", 2*nat.UpgradeInterval, func(tickResult) bool { return f.route().kind == PathDirect })
			if took > tc.within {
				t.Fatalf("direct again %s after it came back, want within %s", took, tc.within)
			}
		})
	}
}

// TestFSMIdleCheckCadence: an idle direct path is probed every
// nat.KeepaliveInterval, each gap under the shortest NAT timeout the lab
// has seen, so its mappings never expire; with traffic it is probed every
// nat.ActiveProbeInterval.
func TestFSMIdleCheckCadence(t *testing.T) {
	f := newFSMSim()
	f.sending = false
	f.env.lastSent = f.now.Add(-time.Minute)
	f.warm(time.Minute)
	gaps := func() (lo, hi time.Duration) {
		lo = time.Hour
		for i := 1; i < len(f.probes); i++ {
			g := f.probes[i].Sub(f.probes[i-1])
			lo, hi = min(lo, g), max(hi, g)
		}
		return lo, hi
	}
	if len(f.probes) < 10 {
		t.Fatalf("%d keepalive probes in a minute idle", len(f.probes))
	}
	lo, hi := gaps()
	if lo < nat.KeepaliveInterval || hi > nat.KeepaliveInterval+maintenanceTick {
		t.Fatalf("idle keepalives %s to %s apart, want every %s", lo, hi, nat.KeepaliveInterval)
	}
	if hi >= labNATTimeout {
		t.Fatalf("idle keepalives up to %s apart: a NAT that forgets after %s loses the mapping", hi, labNATTimeout)
	}
	if f.route().kind != PathDirect {
		t.Fatal("an idle path that answers its keepalives was given up")
	}
	f.sending, f.probes = true, nil
	f.warm(10 * time.Second)
	lo, hi = gaps()
	if lo < nat.ActiveProbeInterval || hi > nat.ActiveProbeInterval+maintenanceTick {
		t.Fatalf("active path probed %s to %s apart, want every %s", lo, hi, nat.ActiveProbeInterval)
	}
}

// TestFSMRelayLostDetected: on the relay path with data flowing, the relay
// stops answering (killed): the tick reports the relay path lost within
// relayLostAfter and a tick, the relay is probed every tick meanwhile, and
// the loss is reported once per silence.
func TestFSMRelayLostDetected(t *testing.T) {
	f := newFSMSim()
	f.pr.route.Store(f.pr.relayRouteLocked())
	f.pr.relayRTT = time.Millisecond
	f.warm(time.Second)
	if f.lastRes.relayLost {
		t.Fatal("a relay path that answers was reported lost")
	}
	f.relayUp = false
	probesBefore := f.relayPr
	took := f.until(t, "relay path lost", 5*time.Second, func(r tickResult) bool { return r.relayLost })
	if took > relayLostAfter+maintenanceTick {
		t.Fatalf("relay path reported lost %s after the relay stopped, want within %s", took, relayLostAfter+maintenanceTick)
	}
	if n := f.relayPr - probesBefore; n < int(took/maintenanceTick)-2 {
		t.Fatalf("%d relay probes in the %s before the loss, want one a tick once suspect", n, took)
	}
	for range 10 {
		if f.tick().relayLost {
			t.Fatal("the same silence was reported lost twice")
		}
	}
	// The relay answers again, then dies again: a new silence, reported.
	f.relayUp = true
	f.warm(time.Second)
	f.relayUp = false
	f.until(t, "second relay loss", 5*time.Second, func(r tickResult) bool { return r.relayLost })
}

// relaySim plays the relay layer's tick (tickRelays) on virtual time:
// which bindings get a RelayBind at each tick.
type relaySim struct {
	now time.Time
	r   relays
}

func newRelaySim(addrs ...netip.AddrPort) *relaySim {
	t0 := time.Unix(1_800_000_000, 0)
	rs := &relaySim{now: t0}
	rs.r.binds = map[netip.AddrPort]*binding{}
	for _, a := range addrs {
		rs.r.binds[a] = &binding{sent: t0.Add(-time.Millisecond), bound: t0, rtt: time.Millisecond}
	}
	rs.r.chosen.Store(&addrs[0])
	return rs
}

// tick advances one maintenance tick and returns the relays bound now.
func (rs *relaySim) tick() []netip.AddrPort {
	rs.now = rs.now.Add(maintenanceTick)
	var due []netip.AddrPort
	for a, b := range rs.r.binds {
		if b.bindDueLocked(rs.now, false, rs.r.lostAt) {
			b.sent = rs.now
			if !rs.r.lostAt.IsZero() {
				b.lostBinds++
			}
			due = append(due, a)
		}
	}
	return due
}

// bound is a RelayBound from a at now.
func (rs *relaySim) bound(a netip.AddrPort) (choose, announce bool) {
	b := rs.r.binds[a]
	b.bound = rs.now
	return rs.r.boundAfterLossLocked(a, b, rs.now)
}

// TestFSMRelayGoneRebinds: the relay instance that held this peer's flow
// is killed; the anycast address leads to another instance only after the
// front door noticed (about 400 ms). Once the relay path is found lost, a
// bind goes out at once and again every lostRetry; the first answer,
// after a retry, is announced (the new instance's ticket must reach the
// peers), within lostRetry of the front door's move.
func TestFSMRelayGoneRebinds(t *testing.T) {
	relay := netip.MustParseAddrPort("198.51.100.2:3479")
	rs := newRelaySim(relay)
	for range 20 {
		if len(rs.tick()) != 0 {
			t.Fatal("a bound relay was bound again within nat.RelayRebindInterval")
		}
	}
	lost := rs.now
	if !rs.r.lostLocked(lost) {
		t.Fatal("the first loss was refused")
	}
	if rs.r.lostLocked(lost) {
		t.Fatal("a loss still unanswered was taken twice")
	}
	var binds []time.Time
	moved := lost.Add(400 * time.Millisecond) // the front door moves the flow
	for {
		due := rs.tick()
		if len(due) > 0 {
			binds = append(binds, rs.now)
		}
		if len(due) > 0 && rs.now.After(moved) {
			break
		}
		if rs.now.Sub(lost) > 3*time.Second {
			t.Fatal("no bind after the front door moved the flow")
		}
	}
	if binds[0].Sub(lost) > maintenanceTick {
		t.Fatalf("first bind %s after the loss, want at the next tick", binds[0].Sub(lost))
	}
	for i := 1; i < len(binds); i++ {
		if g := binds[i].Sub(binds[i-1]); g > lostRetry+maintenanceTick/2 {
			t.Fatalf("binds %s apart after the loss, want every %s", g, lostRetry)
		}
	}
	if took := rs.now.Sub(moved); took > lostRetry {
		t.Fatalf("rebound %s after the front door moved, want within %s", took, lostRetry)
	}
	choose, announce := rs.bound(relay)
	if choose || !announce {
		t.Fatalf("the relay answered after retries: choose %v announce %v, want the new ticket announced on the same relay", choose, announce)
	}
	if len(rs.tick()) != 0 {
		t.Fatal("binds went on after the answer")
	}
}

// TestFSMRelayLostOtherRelay: two relays bound, the chosen one gone: the
// other, bound at once with it, answers and becomes the chosen relay,
// announced. A relay that answers the first bind (the peer went silent,
// not the relay) is not announced, and neither is a loss within
// lostReactEvery of the last announced one.
func TestFSMRelayLostOtherRelay(t *testing.T) {
	r1 := netip.MustParseAddrPort("198.51.100.2:3479")
	r2 := netip.MustParseAddrPort("198.51.100.9:3479")
	rs := newRelaySim(r1, r2)
	rs.tick()
	rs.r.lostLocked(rs.now)
	if due := rs.tick(); len(due) != 2 {
		t.Fatalf("after the loss %d relays bound, want both", len(due))
	}
	choose, announce := rs.bound(r2)
	if !choose || !announce {
		t.Fatalf("the other relay answered first: choose %v announce %v, want both", choose, announce)
	}

	rs = newRelaySim(r1)
	rs.r.lostLocked(rs.now)
	rs.tick()
	if choose, announce := rs.bound(r1); choose || announce {
		t.Fatalf("the relay answered its first bind: choose %v announce %v, want neither", choose, announce)
	}
	// Two losses with retries, the second within lostReactEvery.
	rs.r.lostLocked(rs.now)
	rs.tick()
	rs.now = rs.now.Add(lostRetry)
	rs.tick()
	if _, announce := rs.bound(r1); !announce {
		t.Fatal("an answer after a retry was not announced")
	}
	rs.r.lostLocked(rs.now)
	rs.tick()
	rs.now = rs.now.Add(lostRetry)
	rs.tick()
	if _, announce := rs.bound(r1); announce {
		t.Fatal("a second loss within lostReactEvery was announced")
	}
}
