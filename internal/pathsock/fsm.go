package pathsock

import (
	"net/netip"
	"time"

	"github.com/keymesh/keymesh/internal/nat"
)

// The per-peer state machine. Every timing decision about one peer's paths
// is a method of peer that takes the time and returns what to do; it sends
// nothing, starts nothing and reads no clock. The socket shell (Sock:
// sockets, goroutines, the maintenance ticker) calls it and executes the
// result: tickPeers in probe.go is that shell. Tests drive the methods on
// virtual time (fsm_test.go).

// tickEnv is what a peer's tick needs to know about this side.
type tickEnv struct {
	// noDirect: direct paths are off (configuration, or a stream tunnel).
	noDirect bool
	// birthday: the two NATs punch by the birthday paradox (a lost direct
	// path lets the next punch start sooner).
	birthday bool
	// lastSent, lastSeen and lastDirect are the peer's atomics read
	// before the lock: the last QUIC packet sent to it, the last frame
	// heard from it, the last frame heard over its direct path.
	lastSent, lastSeen, lastDirect time.Time
}

// tickResult is what a peer's tick asks the shell to do.
type tickResult struct {
	// probes are direct candidates to probe now.
	probes []netip.AddrPort
	// relayProbe: probe the peer through the relay.
	relayProbe bool
	// forget: the peer has been idle for peerIdleTTL; drop its state.
	forget bool
	// lost is the direct route given up (nil: none); now is what
	// replaced it. The shell resends what went out on it since the peer
	// was last heard, and, when now is not direct, reacts to a loss of
	// this side's mappings (pathLost).
	lost, now *route
	// relayLost: the relay path carries data out but nothing comes back
	// (relayLostAfter): the relay may be gone; the shell rebinds it at
	// once (relays.lostLocked).
	relayLost bool
	// closeKept is the winning birthday socket, unused by the route for
	// nat.BirthdayKeep: the shell closes it.
	closeKept *extra
	// rebirth: the direct path was lost to the relay and the two NATs
	// punch by the birthday paradox: the shell starts this side's
	// birthday punch at once (startBirthday, lost), rather than at the
	// next PathUpdate from the peer. The NAT that forgot the mappings
	// the last punch found needs a new punch; the side that notices the
	// loss second heard the peer's announcement while its own path still
	// looked up, and the next announcement comes a second later.
	rebirth bool
}

// relayLostAfter is how long the relay path in use may stay silent while
// data goes out before the relay counts as lost. The relay path is probed
// every tick once suspect (relayProbeDue), so this is a few unanswered
// probes.
const relayLostAfter = 300 * time.Millisecond

// relayLost decides whether the relay path in use looks lost at now: it is
// suspect (this side sent since it last heard from the peer, within
// nat.TrafficWindow), and the peer has been silent for max(4 rtt,
// relayLostAfter).
func relayLost(now, lastSent, lastSeen time.Time, rtt time.Duration) bool {
	return suspect(now, lastSent, lastSeen, rtt) && now.Sub(lastSeen) >= max(4*rtt, relayLostAfter)
}

// upgradeEvery is how often the candidates of a peer reached through the
// relay are probed at now: every lostUpgradeInterval for lostUpgradeWindow
// after its direct path was lost (a cut that heals, a NAT that came back),
// so that the direct path is taken again within about a second of its
// return; nat.UpgradeInterval otherwise.
func upgradeEvery(now, directLost time.Time) time.Duration {
	if !directLost.IsZero() && now.Sub(directLost) < lostUpgradeWindow {
		return lostUpgradeInterval
	}
	return nat.UpgradeInterval
}

// After a direct path is lost its candidates are probed faster for a while.
const (
	lostUpgradeInterval = time.Second
	lostUpgradeWindow   = time.Minute
)

// tickLocked runs one maintenance tick of the peer's paths at now: liveness
// of the active direct path (fall back when dead), punching and upgrade
// probes of the other candidates, relay probes and relay loss, the
// birthday socket's upkeep, and forgetting an idle peer. pr.mu is held.
func (pr *peer) tickLocked(now time.Time, env tickEnv) tickResult {
	var res tickResult
	punching := !env.noDirect && pr.punch.Active(now)
	if !punching && now.Sub(env.lastSent) > peerIdleTTL && now.Sub(env.lastSeen) > peerIdleTTL &&
		now.Sub(pr.refreshed) > peerIdleTTL {
		res.forget = true
		return res
	}
	res.closeKept = pr.keptExpiredLocked(now)
	r := pr.route.Load()
	if r.kind == PathDirect {
		c := pr.cands[r.addr]
		dead := c == nil
		if c != nil {
			var probe bool
			dead, probe = checkDirect(now, c, env.lastSent, env.lastDirect)
			if probe {
				res.probes = append(res.probes, c.addr)
			}
		}
		if dead {
			res.lost = r
			r = pr.fallbackLocked(r, now, env.birthday)
			res.now = r
			res.rebirth = env.birthday && !env.noDirect && r.kind != PathDirect
		}
	}
	if !env.noDirect {
		every := upgradeEvery(now, pr.directLost)
		for a, c := range pr.cands {
			if r.kind == PathDirect && a == r.addr {
				continue
			}
			if c.learned && now.Sub(c.added) > learnedTTL && now.Sub(c.lastReply) > learnedTTL {
				delete(pr.cands, a)
				continue
			}
			switch {
			case punching:
				if pr.punch.Due(now, c.lastSent) {
					res.probes = append(res.probes, a)
				}
			case r.kind != PathDirect:
				if now.Sub(c.lastSent) >= every {
					res.probes = append(res.probes, a)
				}
			}
		}
	}
	if r.kind == PathRelay {
		res.relayProbe = relayProbeDue(now, env.lastSent, env.lastSeen, pr.lastProbeR, pr.relayRTT)
		// Once per silence: the relay layer retries on its own.
		if relayLost(now, env.lastSent, env.lastSeen, pr.relayRTT) && !env.lastSeen.Equal(pr.relayLostSeen) {
			pr.relayLostSeen = env.lastSeen
			res.relayLost = true
		}
	}
	return res
}

// fallbackLocked leaves a dead direct path for another live direct
// candidate, or the relay, and returns the new route. birthday says the
// path may have come from birthday punching, which may then run again
// sooner (birthdayAgainLocked). pr.mu is held.
func (pr *peer) fallbackLocked(dead *route, now time.Time, birthday bool) *route {
	var best *cand
	for _, c := range pr.cands {
		if c.addr == dead.addr || c.unanswered > 0 || now.Sub(c.lastReply) > 2*nat.ActiveProbeInterval {
			continue
		}
		if best == nil || c.rtt < best.rtt {
			best = c
		}
	}
	nr := pr.relayRouteLocked()
	if best != nil {
		nr = &route{kind: PathDirect, addr: best.addr, via: best.via}
	}
	pr.route.Store(nr)
	if nr.kind != PathDirect {
		pr.directLost = now
		// The NATs may have forgotten the mappings that birthday
		// punching found: let the PathUpdates that follow a loss
		// (pathLost) punch again, not only after punchWindow.
		if birthday {
			pr.birthdayAgainLocked()
		}
	}
	return nr
}

// answerUpdateLocked decides, at a PathUpdate from the peer at now, whether
// this side sends the peer its own PathUpdate at once. It does when the
// update replaced the peer's relay ticket (ticketChanged) while this side
// is announcing a change of its own (announcing: announced within
// announceGap, or rounds left): what it announced went out through the old
// ticket, which after the peer's NAT lost its mappings leads nowhere. When
// both sides lost the direct path to a NAT that forgot its mappings, both
// announce at once, and without the answer the one whose NAT forgot would
// hear of the other's change only at its next round, announceGap later
// (for birthday punching, that is when its side of the punch starts). At
// most once per announceGap, so two peers answering each other's new
// tickets stop. pr.mu is held.
func (pr *peer) answerUpdateLocked(now time.Time, ticketChanged, announcing bool) bool {
	if !ticketChanged || !announcing || (!pr.answered.IsZero() && now.Sub(pr.answered) < announceGap) {
		return false
	}
	pr.answered = now
	return true
}

// keptExpiredLocked returns the winning birthday socket once the route has
// not used it for nat.BirthdayKeep, detached from the peer: the caller
// closes it. pr.mu is held.
func (pr *peer) keptExpiredLocked(now time.Time) *extra {
	if pr.kept == nil || pr.bday != nil {
		return nil
	}
	if r := pr.route.Load(); r.via == pr.kept {
		pr.keptLost = time.Time{}
		return nil
	}
	if pr.keptLost.IsZero() {
		pr.keptLost = now
		return nil
	}
	if now.Sub(pr.keptLost) < nat.BirthdayKeep {
		return nil
	}
	e := pr.kept
	e.retired.Store(true)
	pr.forgetViaLocked(e)
	pr.kept, pr.keptLost = nil, time.Time{}
	return e
}

// forgetViaLocked detaches the peer's candidates from a closed socket.
// pr.mu is held.
func (pr *peer) forgetViaLocked(e *extra) {
	for a, c := range pr.cands {
		if c.via != e {
			continue
		}
		if c.learned {
			delete(pr.cands, a)
		} else {
			c.via = nil
		}
	}
}

// probed records a probe sent to the candidate at now.
func (c *cand) probed(now time.Time) {
	c.lastSent = now
	if c.unanswered == 0 {
		c.firstUnanswered = now
	}
	c.unanswered++
}

// What a direct probe's reply did to the route.
const (
	routeKept     = iota // no change
	routeUp              // the first direct path: the route leaves the relay
	routeSwitched        // another direct path
)

// directReplyLocked takes an authenticated ProbeReply from candidate c
// (round trip rtt, received on socket via) at now: the candidate is
// proven and measured, and may become the route. The first direct path
// replaces the relay at once; another direct path replaces the active one
// when that fails or is much slower, or when the peer no longer publishes
// it (its address changed) and does publish c. pr.mu is held.
func (pr *peer) directReplyLocked(c *cand, rtt time.Duration, via *extra, now time.Time) int {
	c.lastReply, c.unanswered = now, 0
	c.rtt = smooth(c.rtt, rtt)
	c.via = via
	cur := pr.route.Load()
	switch {
	case cur.kind != PathDirect:
		pr.route.Store(&route{kind: PathDirect, addr: c.addr, via: c.via})
		return routeUp
	case cur.addr == c.addr && cur.via != c.via:
		pr.route.Store(&route{kind: PathDirect, addr: c.addr, via: c.via})
	case cur.addr != c.addr:
		old := pr.cands[cur.addr]
		if old == nil || old.unanswered >= nat.MissedProbes || c.rtt*4 < old.rtt*3 ||
			(old.learned && !c.learned) ||
			(old.unanswered > 0 && now.Sub(old.firstUnanswered) > 2*old.rtt+100*time.Millisecond) {
			pr.route.Store(&route{kind: PathDirect, addr: c.addr, via: c.via})
			return routeSwitched
		}
	}
	return routeKept
}
