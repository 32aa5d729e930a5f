package pathsock

import (
	"time"

	"github.com/keymesh/keymesh/internal/nat"
)

// Quick loss detection. While traffic flows, QUIC's acknowledgements come
// back within a round trip; a peer silent for several round trips although
// this side kept sending has most likely lost the path (a cut, a NAT that
// forgot its mapping). The active direct path is then suspect: it is probed
// at every maintenance tick instead of every nat.ActiveProbeInterval, and
// given up once quickMissed probes stayed unanswered for quickDeadAfter
// (or four round trips, if longer). A suspicion that proves wrong costs a
// few probes: the first reply clears it.
const (
	// silenceMin is the least silence that makes a path suspect.
	silenceMin = 100 * time.Millisecond
	// quickMissed unanswered probes, the oldest quickDeadAfter old, end a
	// suspect path.
	quickMissed    = 2
	quickDeadAfter = 200 * time.Millisecond
)

// suspect reports whether the active direct path, of smoothed RTT rtt,
// looks lost at now: this side sent (lastSent) since it last heard from the
// peer (lastSeen), within nat.TrafficWindow, and the peer has been silent
// for max(4 rtt, silenceMin).
func suspect(now, lastSent, lastSeen time.Time, rtt time.Duration) bool {
	if lastSent.IsZero() || now.Sub(lastSent) >= nat.TrafficWindow || !lastSent.After(lastSeen) {
		return false
	}
	return now.Sub(lastSeen) >= max(4*rtt, silenceMin)
}

// checkDirect decides for the active direct path's candidate c at now:
// whether it is dead (fall back), else whether to probe it now. lastSent
// is the peer's last data sent, lastSeen the last frame heard over this
// path (not through the relay: a peer that switched to the relay has
// given this path up).
func checkDirect(now time.Time, c *cand, lastSent, lastSeen time.Time) (dead, probe bool) {
	if suspect(now, lastSent, lastSeen, c.rtt) {
		if c.unanswered >= quickMissed && now.Sub(c.firstUnanswered) >= max(4*c.rtt, quickDeadAfter) {
			return true, false
		}
		// Every tick (the ticker's phase may make a tick a little
		// shorter than maintenanceTick).
		return false, now.Sub(c.lastSent) >= maintenanceTick/2
	}
	if nat.Dead(now, c.unanswered, c.firstUnanswered) {
		return true, false
	}
	return false, now.Sub(c.lastSent) >= nat.ProbeInterval(now, lastSent)
}
