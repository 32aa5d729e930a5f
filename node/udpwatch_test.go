package node

import (
	"testing"
	"time"
)

// clock is virtual time for udpWatch: tests step it, nothing sleeps.
type clock struct{ t time.Time }

func (c *clock) add(d time.Duration) time.Time { c.t = c.t.Add(d); return c.t }

// run ticks w every 50 ms for d with the given signals and returns the
// first action other than udpNothing and when it came (zero: none).
func run(w *udpWatch, c *clock, d time.Duration, relay time.Time, direct bool) (udpAction, time.Time) {
	for end := c.t.Add(d); c.t.Before(end); {
		now := c.add(50 * time.Millisecond)
		if a := w.tick(now, relay, direct); a != udpNothing {
			return a, now
		}
	}
	return udpNothing, time.Time{}
}

func start() *clock { return &clock{t: time.Unix(1_700_000_000, 0)} }

// TestUDPWatchLeavesWhenNothingAnswers: requests to the rendezvous that go
// unanswered for half the give-up time make the node ask its relays; when
// none answers either, and no peer is on a direct path, it leaves UDP at
// the give-up time after the first unanswered request: udpGiveUpMin on a
// short round trip, udpGiveUpRTTs round trips on a long one, at most
// udpGiveUpMax.
func TestUDPWatchLeavesWhenNothingAnswers(t *testing.T) {
	for _, tc := range []struct {
		rtt, giveUp time.Duration
	}{
		{0, udpGiveUpMin},
		{time.Millisecond, udpGiveUpMin},
		{300 * time.Millisecond, udpGiveUpRTTs * 300 * time.Millisecond},
		{time.Second, udpGiveUpMax},
	} {
		c := start()
		var w udpWatch
		for range 20 { // requests answered after rtt, one each
			w.ask(c.t)
			w.heard(c.add(tc.rtt))
			c.add(time.Second)
		}
		t0 := c.t
		w.ask(t0)
		w.ask(c.add(100 * time.Millisecond))
		a, at := run(&w, c, 5*time.Second, time.Time{}, false)
		if a != udpCheckRelays || at.Sub(t0) != tc.giveUp/2 {
			t.Fatalf("rtt %v: first action %v at +%v, want %v at +%v", tc.rtt, a, at.Sub(t0), udpCheckRelays, tc.giveUp/2)
		}
		a, at = run(&w, c, 5*time.Second, time.Time{}, false)
		if a != udpLeave || at.Sub(t0) != tc.giveUp {
			t.Fatalf("rtt %v: then %v at +%v, want %v at +%v", tc.rtt, a, at.Sub(t0), udpLeave, tc.giveUp)
		}
	}
}

// TestUDPWatchStaysWhileUDPAnswers: an answer from the rendezvous, a
// relay's answer after the silence began, or a live direct path each keep
// the node on UDP (a rendezvous that restarts moves nobody); so does a
// single unanswered request (a lost datagram or a report).
func TestUDPWatchStaysWhileUDPAnswers(t *testing.T) {
	for name, tc := range map[string]struct {
		answered, relay, direct, once bool
	}{
		"rendezvous answers": {answered: true},
		"relay answers":      {relay: true},
		"direct path alive":  {direct: true},
		"one request":        {once: true},
	} {
		t.Run(name, func(t *testing.T) {
			c := start()
			var w udpWatch
			w.ask(c.t)
			if !tc.once {
				w.ask(c.add(250 * time.Millisecond))
			}
			var relay time.Time
			for range 100 { // 5 s
				now := c.add(50 * time.Millisecond)
				if tc.answered {
					w.heard(now)
					w.ask(now)
				}
				if tc.relay && w.checked.After(relay) {
					relay = now // the relay answers the check
				}
				switch a := w.tick(now, relay, tc.direct); a {
				case udpNothing, udpCheckRelays:
				default:
					t.Fatalf("%v at %v", a, now)
				}
			}
		})
	}
}

// TestUDPWatchReturnsOnAnswer: in the tunnel the node probes UDP every
// udpProbeEvery, and returns at the first authenticated answer, not before
// the hold-down; the main client's traffic through the tunnel counts
// neither way.
func TestUDPWatchReturnsOnAnswer(t *testing.T) {
	c := start()
	var w udpWatch
	w.entered(c.t)
	t0 := c.t
	probes := 0
	for range 40 { // 2 s, UDP still blocked
		now := c.add(50 * time.Millisecond)
		w.heard(now) // answers through the tunnel say nothing of UDP
		w.ask(now)
		switch a := w.tick(now, now, false); a {
		case udpProbe:
			probes++
		case udpNothing:
		default:
			t.Fatalf("%v at +%v with UDP blocked", a, now.Sub(t0))
		}
	}
	if want := int(2*time.Second/udpProbeEvery) + 0; probes < want-1 || probes > want {
		t.Fatalf("%d probes in 2 s, want about %d", probes, want)
	}
	w.probeHeard()
	if a := w.tick(c.add(50*time.Millisecond), time.Time{}, false); a != udpReturn {
		t.Fatalf("after an answer to a probe: %v, want %v", a, udpReturn)
	}
	w.left(c.t)
	if a, _ := run(&w, c, 5*time.Second, time.Time{}, false); a != udpNothing {
		t.Fatalf("back on UDP with nothing asked: %v", a)
	}
}

// TestUDPWatchHoldDown: an answer in the first udpMinStay does not return
// at once; a node that loses UDP again soon after each return stays in
// the tunnel twice as long each time, up to udpMaxStay; after a quiet
// udpFlapWindow the hold-down starts over.
func TestUDPWatchHoldDown(t *testing.T) {
	c := start()
	var w udpWatch
	want := udpMinStay
	for i := range 8 {
		w.entered(c.t)
		t0 := c.t
		w.probeHeard()
		a, at := run(&w, c, time.Minute, time.Time{}, false)
		if a != udpReturn || at.Sub(t0) < want || at.Sub(t0) > want+50*time.Millisecond {
			t.Fatalf("round %d: %v after %v, want %v after %v", i, a, at.Sub(t0), udpReturn, want)
		}
		w.left(c.add(0))
		c.add(udpFlapWindow / 2)
		want = min(2*want, udpMaxStay)
	}
	c.add(udpFlapWindow)
	w.entered(c.t)
	w.probeHeard()
	if a, at := run(&w, c, time.Minute, time.Time{}, false); a != udpReturn || at.Sub(w.since) > udpMinStay+50*time.Millisecond {
		t.Fatalf("after a quiet %v: %v after %v, want %v after %v", udpFlapWindow, a, at.Sub(w.since), udpReturn, udpMinStay)
	}
}

// TestUDPWatchDialFailed: a tunnel that cannot be opened is tried again
// after udpRetryDial, not at every tick.
func TestUDPWatchDialFailed(t *testing.T) {
	c := start()
	var w udpWatch
	w.ask(c.t)
	w.ask(c.t)
	for {
		a, _ := run(&w, c, 2*time.Second, time.Time{}, false)
		if a == udpLeave {
			break
		}
	}
	w.dialFailed(c.t)
	t0 := c.t
	for {
		a, at := run(&w, c, 3*time.Second, time.Time{}, false)
		if a == udpNothing {
			t.Fatal("no new attempt within 3 s of a failed dial")
		}
		if a == udpLeave {
			if at.Sub(t0) < udpRetryDial {
				t.Fatalf("tried again %v after a failed dial, want at least %v", at.Sub(t0), udpRetryDial)
			}
			return
		}
	}
}

// TestUDPWatchProbesSlowerLater: a node that stays in the tunnel probes UDP
// every udpProbeEvery for udpProbeFastFor, then every udpProbeSlow.
func TestUDPWatchProbesSlowerLater(t *testing.T) {
	c := start()
	var w udpWatch
	w.entered(c.t)
	count := func(d time.Duration) int {
		n := 0
		for end := c.t.Add(d); c.t.Before(end); {
			if w.tick(c.add(50*time.Millisecond), time.Time{}, false) == udpProbe {
				n++
			}
		}
		return n
	}
	if n := count(udpProbeFastFor); n != int(udpProbeFastFor/udpProbeEvery) {
		t.Fatalf("%d probes in the first %v, want %d", n, udpProbeFastFor, udpProbeFastFor/udpProbeEvery)
	}
	if n := count(time.Minute); n != int(time.Minute/udpProbeSlow) {
		t.Fatalf("%d probes in the next minute, want %d", n, time.Minute/udpProbeSlow)
	}
}
