package pathsock

import (
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/nat"
)

// Resending on revival. While a path is down, QUIC's probe timeout doubles
// with every unanswered probe: a path that comes back after 600 ms is used
// again only at the next probe, about a second after the fault. So the
// layer keeps each peer's last few QUIC packets, and when a path carries
// the peer's word again after a silence (a probe reply over the relay or a
// direct path, or the fall back from a dead direct path to the relay), it
// sends those sent since the peer was last heard from once more, at once,
// on the path now chosen. QUIC ignores a packet it already has; one it
// lacked is acknowledged, and the acknowledgement ends the sender's probe
// timeout backoff: data flows again within a round trip of the path's
// return.
const (
	// resendSlots is how many of a peer's last packets are kept.
	resendSlots = 16
	// resendMax is the largest packet kept (larger ones are not).
	resendMax = 1500
)

// resendRing holds a peer's last packets and when each was sent. Its lock
// guards every field.
type resendRing struct {
	mu   sync.Mutex
	buf  [resendSlots][]byte
	at   [resendSlots]int64 // unix ns; 0: empty
	next int
}

// add keeps a copy of p, sent at now.
func (r *resendRing) add(p []byte, now int64) {
	if len(p) > resendMax {
		return
	}
	r.mu.Lock()
	b := r.buf[r.next]
	if b == nil {
		b = make([]byte, 0, resendMax)
	}
	r.buf[r.next] = append(b[:0], p...)
	r.at[r.next] = now
	r.next = (r.next + 1) % resendSlots
	r.mu.Unlock()
}

// since returns copies of the packets sent after t, oldest first, and
// forgets them (each is resent at most once).
func (r *resendRing) since(t int64) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]byte
	for i := range resendSlots {
		j := (r.next + i) % resendSlots
		if r.at[j] != 0 && r.at[j] > t {
			out = append(out, append([]byte(nil), r.buf[j]...))
			r.at[j] = 0
		}
	}
	return out
}

// revived reports whether a frame from a peer at now ends a silence worth
// a resend: this side sent since it last heard from the peer (prevSeen),
// and that was at least silenceMin ago.
func revived(now, prevSeen, lastSent time.Time) bool {
	return !prevSeen.IsZero() && lastSent.After(prevSeen) && now.Sub(prevSeen) >= silenceMin
}

// heard records a frame from the peer at now. When it ends a silence
// worth a resend (revived) it returns the previous lastSeen and true: the
// caller resends (Sock.resend) once it holds no lock, on the route the
// frame leaves in place. Every sealed frame counts (probes, replies,
// PathUpdates): the first of them to arrive after the silence may be any.
func (pr *peer) heard(now time.Time) (prevSeen time.Time, revive bool) {
	prevSeen = unixTime(pr.lastSeen.Swap(now.UnixNano()))
	if prevSeen.IsZero() && pr.met != nil {
		pr.metOnce.Do(func() { close(pr.met) })
	}
	return prevSeen, revived(now, prevSeen, unixTime(pr.lastSent.Load()))
}

// relayProbeDue reports whether the relay path, in use, should be probed
// at now: every relayProbeEvery for its RTT while traffic flows, and at
// every maintenance tick while it looks lost (suspect), so that its
// return is noticed (and resent on) within a tick.
func relayProbeDue(now, lastSent, lastSeen, lastProbe time.Time, rtt time.Duration) bool {
	if now.Sub(lastSent) >= nat.TrafficWindow {
		return false
	}
	if suspect(now, lastSent, lastSeen, rtt) {
		return now.Sub(lastProbe) >= maintenanceTick/2
	}
	return now.Sub(lastProbe) >= relayProbeEvery
}

// resend sends pr's packets sent after prevSeen again on its current
// route. Call it without pr.mu held.
func (s *Sock) resend(pr *peer, prevSeen time.Time) {
	ps := pr.resent.since(prevSeen.UnixNano())
	for _, p := range ps {
		s.sendOn(pr, pr.route.Load(), p)
	}
	if len(ps) > 0 {
		s.stats.Resent.Add(uint64(len(ps)))
		s.log.Debug("resent on revival", "peer", pr.id.Short(), "packets", len(ps), "path", pr.route.Load().kind)
	}
}

// followToRelay takes pr's data that came through the relay while this
// side's route to it is direct (the shell of followRelayLocked): the peer
// may have given the direct path up, so this side may move to the relay
// at once rather than after its own probes time out, and resends there.
// Probes bring the direct path back once it answers again.
func (s *Sock) followToRelay(pr *peer, r *route, now time.Time) {
	lastSent := unixTime(pr.lastSent.Load())
	lastDirect := unixTime(pr.lastDirect.Load())
	pr.mu.Lock()
	st := nat.ChooseStrategy(s.cfg.NAT(), pr.nat)
	birthday := st == nat.StrategyBirthdayHard || st == nat.StrategyBirthdayEasy
	move := pr.followRelayLocked(r, now, lastSent, lastDirect, birthday)
	pr.mu.Unlock()
	if move {
		s.log.Info("direct path lost; the peer moved to the relay", "peer", pr.id.Short(), "remote", r.addr.String())
		s.resend(pr, lastDirect)
	}
}

// followRelayLocked decides, for a data frame from the peer that came
// through the relay at now while the route r is direct, whether to move
// to the relay, and moves: when the direct path looks lost from here too
// (suspect: sent on it since lastDirect, nothing heard on it for several
// round trips). A path birthday punching found (birthday) is left to this
// side's own loss detection (fallbackLocked): its re-punch depends on
// which side leaves first (measured: following the peer there kept the
// relay). pr.mu is held.
func (pr *peer) followRelayLocked(r *route, now, lastSent, lastDirect time.Time, birthday bool) bool {
	if birthday || pr.route.Load() != r {
		return false
	}
	var rtt time.Duration
	if c := pr.cands[r.addr]; c != nil {
		rtt = c.rtt
	}
	if !suspect(now, lastSent, lastDirect, rtt) {
		return false
	}
	nr := pr.relayRouteLocked()
	if nr.kind != PathRelay {
		return false
	}
	pr.route.Store(nr)
	return true
}
