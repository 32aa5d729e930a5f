package pathsock

import (
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/nat"
)

// liveSim drives checkDirect on virtual time, as tickPeer does every
// maintenance tick, for one active direct path.
type liveSim struct {
	now      time.Time
	c        cand
	lastSent time.Time // data sent
	lastSeen time.Time // anything heard
	probes   int
}

// tick runs one maintenance tick: send data when sending, let the path
// answer outstanding probes when answering, then decide. It reports
// whether the path was declared dead.
func (l *liveSim) tick(sending, answering bool) bool {
	l.now = l.now.Add(maintenanceTick)
	if sending {
		l.lastSent = l.now
		if answering {
			l.lastSeen = l.now // QUIC's acknowledgements
		}
	}
	if answering && l.c.unanswered > 0 {
		l.c.unanswered, l.c.lastReply, l.lastSeen = 0, l.now, l.now
	}
	dead, probe := checkDirect(l.now, &l.c, l.lastSent, l.lastSeen)
	if dead {
		return true
	}
	if probe {
		l.probes++
		l.c.lastSent = l.now
		if l.c.unanswered == 0 {
			l.c.firstUnanswered = l.now
		}
		l.c.unanswered++
	}
	return false
}

func newLiveSim() *liveSim {
	t0 := time.Unix(1_800_000_000, 0)
	return &liveSim{now: t0, c: cand{rtt: time.Millisecond, lastReply: t0, lastSent: t0}, lastSent: t0, lastSeen: t0}
}

// TestCutNoticedWithinHalfASecond: data flows on a direct path and the path
// is cut. The layer must give the path up within 500 ms (it waited up to
// 1.5 s for three probes at nat.ActiveProbeInterval), so the relay carries
// the data before QUIC's retransmission timer has backed off far.
func TestCutNoticedWithinHalfASecond(t *testing.T) {
	l := newLiveSim()
	for range 20 {
		if l.tick(true, true) {
			t.Fatal("a healthy path with traffic was declared dead")
		}
	}
	cut := l.now
	for !l.tick(true, false) {
		if l.now.Sub(cut) > 5*time.Second {
			t.Fatal("the cut was never noticed")
		}
	}
	if took := l.now.Sub(cut); took > 500*time.Millisecond {
		t.Fatalf("the cut was noticed after %s of virtual time, want within 500ms", took)
	}
}

// TestSilentPeerThatAnswersStays: the peer sends nothing back for a while
// (a one-way stream whose acknowledgements are delayed, a slow peer) but
// answers probes: the path is probed more often and never given up.
func TestSilentPeerThatAnswersStays(t *testing.T) {
	l := newLiveSim()
	for i := range 200 {
		// Acknowledgements only every tenth tick; probes answered
		// within a tick.
		acked := i%10 == 0
		if acked {
			l.lastSeen = l.now
		}
		if l.tick(true, false) {
			t.Fatalf("tick %d: a path that answers its probes was declared dead", i)
		}
		if l.c.unanswered > 0 {
			l.c.unanswered, l.lastSeen = 0, l.now // the reply
		}
	}
}

// TestIdlePathKeepalive: with no traffic the path is probed every
// nat.KeepaliveInterval, and a dead idle path is given up only by the slow
// rule (nothing depends on it).
func TestIdlePathKeepalive(t *testing.T) {
	l := newLiveSim()
	l.lastSent = l.now.Add(-time.Minute)
	for range int(30 * time.Second / maintenanceTick) {
		l.tick(false, true)
	}
	if want := int(30 * time.Second / nat.KeepaliveInterval); l.probes < want-1 || l.probes > want+1 {
		t.Fatalf("%d keepalive probes in 30 s idle, want about %d", l.probes, want)
	}
}

// TestResumeOnDeadIdlePath: an idle path died unnoticed (between
// keepalives); when traffic resumes, the loss is noticed within 500 ms.
func TestResumeOnDeadIdlePath(t *testing.T) {
	l := newLiveSim()
	l.lastSent = l.now.Add(-time.Minute)
	for range 12 {
		l.tick(false, true)
	}
	// The path dies while idle; traffic resumes a second later.
	for range 10 {
		if l.tick(false, false) {
			t.Fatal("an idle path died of a single unanswered keepalive")
		}
	}
	resume := l.now
	for !l.tick(true, false) {
		if l.now.Sub(resume) > 10*time.Second {
			t.Fatal("the loss was never noticed after traffic resumed")
		}
	}
	if took := l.now.Sub(resume); took > 500*time.Millisecond {
		t.Fatalf("the loss was noticed %s after traffic resumed, want within 500ms", took)
	}
}

// TestBirthdayAgainAfterLoss: a birthday punch runs once per punchWindow,
// but a NAT that forgot the mappings it found must not leave the peers on
// the relay for the rest of the window: after a loss the next punch may
// start birthdayAgainAfter after the last one began, the easy side's
// spent spray window no longer holding it back.
func TestBirthdayAgainAfterLoss(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	pr := &peer{bdayAt: t0, sprayUntil: t0.Add(nat.BirthdayWindow)}
	allowed := func(now time.Time) bool {
		return !now.Before(pr.sprayUntil) && now.Sub(pr.bdayAt) >= punchWindow
	}
	if allowed(t0.Add(birthdayAgainAfter)) {
		t.Fatal("a second punch was allowed without a loss")
	}
	pr.birthdayAgainLocked()
	if allowed(t0.Add(birthdayAgainAfter - time.Millisecond)) {
		t.Fatal("a punch was allowed again sooner than birthdayAgainAfter")
	}
	if !allowed(t0.Add(birthdayAgainAfter)) {
		t.Fatal("after a loss, a punch was still held back for punchWindow")
	}
}
