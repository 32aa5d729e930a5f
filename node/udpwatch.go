package node

import "time"

// When a node with a stream relay gives UDP up mid-session, and when it
// comes back: the decisions, on the clock they are given (udpWatch); the
// mechanism that acts on them is in fallback.go.
//
// Leaving. The rendezvous client sends a request the server answers
// (Register, Connect, Keepalive) at least every rendezvous keepalive (1 s
// by default), and at once when the path layer loses a path (pathLost
// re-registers). The give-up time is udpGiveUpRTTs round trips to the
// rendezvous (measured on requests answered at the first try), within
// [udpGiveUpMin, udpGiveUpMax]. When requests have gone unanswered for
// half of it, the node asks its relays for fresh bindings; it gives UDP up
// when requests have gone unanswered for all of it, no relay has answered
// since (for half of it at least), no peer is on a live direct path, and
// at least udpMinAsks requests went out (one lost datagram or report is
// no sign). A rendezvous that restarts therefore moves nobody into the
// tunnel while a relay or a direct path still answers.
//
// Returning. In the tunnel the node sends a rendezvous keepalive from a
// UDP socket of its own (on the port it had) every udpProbeEvery, after
// udpProbeFastFor in the tunnel every udpProbeSlow (a network that
// blocks UDP for good costs the rendezvous half a keepalive's load); the
// first answer moves the path layer back onto that socket, after at least
// the hold-down: udpMinStay, doubled each time UDP is given up again
// within udpFlapWindow of a return (up to udpMaxStay), so a network that
// drops UDP on and off is not chased.
//
// Only authenticated answers count, each way: a sealed frame from the
// pinned rendezvous key, fresh and not replayed (rzclient's OnAnswer), a
// relay's answer that repeats the echo of our latest bind, a direct path
// kept alive by sealed probes. A stranger's packets can neither make the
// node leave UDP (they cannot make answers go missing: the rendezvous and
// the relays spend no per-source budget on what does not prove its
// address, TestSpoofedFloodCannotHoldNodeInTunnel) nor return to it.
const (
	udpGiveUpMin    = 400 * time.Millisecond
	udpGiveUpMax    = 2 * time.Second
	udpGiveUpRTTs   = 4
	udpMinAsks      = 2
	udpProbeEvery   = 500 * time.Millisecond
	udpProbeFastFor = time.Minute
	udpProbeSlow    = 2 * time.Second
	udpRetryDial    = time.Second
	udpMinStay      = time.Second
	udpMaxStay      = 32 * time.Second
	udpFlapWindow   = 10 * time.Second
)

// udpAction is what udpWatch.tick asks the node to do.
type udpAction int

const (
	udpNothing     udpAction = iota
	udpCheckRelays           // ask the relays for fresh bindings
	udpLeave                 // open the tunnel and move the path layer into it
	udpProbe                 // send a keepalive to the rendezvous over real UDP
	udpReturn                // move the path layer back onto UDP
)

func (a udpAction) String() string {
	return [...]string{"nothing", "check relays", "leave UDP", "probe UDP", "return to UDP"}[a]
}

// udpWatch is the decision state. It is not safe for concurrent use.
type udpWatch struct {
	tunneled bool

	// Over UDP: the first request since the last sign of UDP life (zero:
	// none pending), how many went out since, and when the relays were
	// asked for fresh bindings in this episode (zero: not yet).
	asked   time.Time
	asks    int
	checked time.Time
	retry   time.Time     // a failed tunnel dial waits until then
	rtt     time.Duration // smoothed round trip to the rendezvous (0: none yet)

	// In the tunnel: when it began, the last probe, whether one was
	// answered, and the hold-down.
	since    time.Time
	probed   time.Time
	answered bool
	stay     time.Duration
	returned time.Time // last return to UDP (zero: none)
}

// ask notes a request to the rendezvous over UDP; in the tunnel the main
// client's requests travel through it and say nothing about UDP.
func (w *udpWatch) ask(now time.Time) {
	if w.tunneled {
		return
	}
	if w.asked.IsZero() {
		w.asked = now
		w.checked = time.Time{}
	}
	w.asks++
}

// heard notes an authenticated answer from the rendezvous to the main
// client at now: outside the tunnel, UDP works. An answer to a lone
// request times the round trip.
func (w *udpWatch) heard(now time.Time) {
	if w.tunneled {
		return
	}
	if w.asks == 1 {
		if d := now.Sub(w.asked); d >= 0 {
			if w.rtt == 0 {
				w.rtt = d
			} else {
				w.rtt = (7*w.rtt + d) / 8
			}
		}
	}
	w.asked, w.asks, w.checked = time.Time{}, 0, time.Time{}
}

// giveUp is how long requests may go unanswered before UDP is given up.
func (w *udpWatch) giveUp() time.Duration {
	return min(max(udpGiveUpRTTs*w.rtt, udpGiveUpMin), udpGiveUpMax)
}

// probeHeard notes an authenticated answer to a UDP probe sent from the
// tunnel.
func (w *udpWatch) probeHeard() {
	if w.tunneled {
		w.answered = true
	}
}

// tick decides at now, given when a relay last answered a bind and
// whether some peer is on a live direct path.
func (w *udpWatch) tick(now, relayAnswered time.Time, direct bool) udpAction {
	if w.tunneled {
		if w.answered && now.Sub(w.since) >= w.stay {
			return udpReturn
		}
		every := udpProbeEvery
		if now.Sub(w.since) >= udpProbeFastFor {
			every = udpProbeSlow
		}
		if !w.answered && now.Sub(w.probed) >= every {
			w.probed = now
			return udpProbe
		}
		return udpNothing
	}
	if w.asked.IsZero() {
		return udpNothing
	}
	if direct || relayAnswered.After(w.asked) {
		// UDP works; the rendezvous alone is silent (restarting, or
		// gone): start over from the next request.
		w.asked, w.asks, w.checked = time.Time{}, 0, time.Time{}
		return udpNothing
	}
	giveUp := w.giveUp()
	if now.Sub(w.asked) < giveUp/2 || now.Before(w.retry) {
		return udpNothing
	}
	if w.checked.IsZero() {
		w.checked = now
		return udpCheckRelays
	}
	if now.Sub(w.asked) < giveUp || now.Sub(w.checked) < giveUp/2 || w.asks < udpMinAsks {
		return udpNothing
	}
	return udpLeave
}

// entered notes that the path layer moved into the tunnel at now.
func (w *udpWatch) entered(now time.Time) {
	switch {
	case w.returned.IsZero() || now.Sub(w.returned) > udpFlapWindow:
		w.stay = udpMinStay
	default:
		w.stay = min(2*max(w.stay, udpMinStay), udpMaxStay)
	}
	w.tunneled, w.since, w.answered = true, now, false
	w.probed = time.Time{}
	w.asked, w.asks, w.checked = time.Time{}, 0, time.Time{}
}

// dialFailed notes that the tunnel could not be opened: try again after
// udpRetryDial.
func (w *udpWatch) dialFailed(now time.Time) {
	w.retry = now.Add(udpRetryDial)
	w.checked = time.Time{}
}

// left notes that the path layer moved back onto UDP at now.
func (w *udpWatch) left(now time.Time) {
	w.tunneled, w.answered = false, false
	w.returned = now
	w.asked, w.asks, w.checked = time.Time{}, 0, time.Time{}
}
