package pathsock

import (
	"bytes"
	"testing"
	"time"
)

// TestResendRing: the ring keeps the last resendSlots packets, returns
// those sent after a time oldest first, and each only once.
func TestResendRing(t *testing.T) {
	var r resendRing
	t0 := time.Unix(1000, 0)
	for i := range resendSlots + 4 {
		r.add([]byte{byte(i)}, t0.Add(time.Duration(i)*time.Millisecond).UnixNano())
	}
	r.add(make([]byte, resendMax+1), t0.Add(time.Hour).UnixNano()) // too large: not kept
	// Packets 4..19 are kept; those after 9 ms are 10..19.
	got := r.since(t0.Add(9 * time.Millisecond).UnixNano())
	if len(got) != 10 {
		t.Fatalf("since 9ms: %d packets, want 10", len(got))
	}
	for i, p := range got {
		if !bytes.Equal(p, []byte{byte(10 + i)}) {
			t.Fatalf("packet %d = %v, want [%d] (oldest first)", i, p, 10+i)
		}
	}
	if again := r.since(t0.Add(9 * time.Millisecond).UnixNano()); len(again) != 0 {
		t.Fatalf("resent %d packets twice", len(again))
	}
	if rest := r.since(0); len(rest) != 6 {
		t.Fatalf("since the start: %d packets, want the 6 not taken (4..9)", len(rest))
	}
}

// TestRevivedAndRelayProbe: the failover timings of resend.go on a virtual
// clock. A reply ends a silence worth a resend only when this side sent
// since it last heard and that was silenceMin ago; the relay path in use
// is probed every relayProbeEvery while it answers and every tick once it
// looks lost, so its return is seen within about maintenanceTick.
func TestRevivedAndRelayProbe(t *testing.T) {
	t0 := time.Unix(2000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	cases := []struct {
		name            string
		now, seen, sent time.Time
		want            bool
	}{
		{"never heard", at(time.Second), time.Time{}, at(900 * time.Millisecond), false},
		{"heard since sent", at(time.Second), at(950 * time.Millisecond), at(900 * time.Millisecond), false},
		{"short silence", at(time.Second), at(950 * time.Millisecond), at(990 * time.Millisecond), false},
		{"silence", at(time.Second), at(900 * time.Millisecond), at(990 * time.Millisecond), true},
	}
	for _, c := range cases {
		if got := revived(c.now, c.seen, c.sent); got != c.want {
			t.Errorf("revived, %s: %v, want %v", c.name, got, c.want)
		}
	}

	rtt := time.Millisecond
	// Traffic flows and the relay answers: the RTT probe every 5 s.
	sent, seen, probe := at(0), at(0), at(-time.Second)
	if relayProbeDue(at(10*time.Millisecond), sent, seen, probe, rtt) {
		t.Error("relay probed 1 s after the last probe while it answers")
	}
	if !relayProbeDue(at(4*time.Second), at(4*time.Second-time.Millisecond), at(4*time.Second-time.Millisecond), probe, rtt) {
		t.Error("relay not probed relayProbeEvery after the last probe")
	}
	// The relay went silent at 0 while sending went on: suspect after
	// silenceMin, then probed at every tick.
	sent = at(150 * time.Millisecond)
	if relayProbeDue(at(50*time.Millisecond), at(50*time.Millisecond), seen, probe.Add(time.Second), rtt) {
		t.Error("relay probed before silenceMin of silence")
	}
	lastProbe := at(100 * time.Millisecond)
	if !relayProbeDue(at(160*time.Millisecond), sent, seen, lastProbe, rtt) {
		t.Error("suspect relay not probed a tick after the last probe")
	}
	if relayProbeDue(at(120*time.Millisecond), sent, seen, lastProbe, rtt) {
		t.Error("suspect relay probed twice within half a tick")
	}
	// No traffic: no probe at all.
	if relayProbeDue(at(10*time.Second), at(0), at(0), at(0), rtt) {
		t.Error("idle relay path probed")
	}

	// The peer's data arrives through the relay while the direct path
	// heard nothing for a while after this side sent on it: follow.
	if !followRelay(at(time.Second), at(950*time.Millisecond), at(800*time.Millisecond), rtt) {
		t.Error("did not follow the peer to the relay after 200 ms of direct silence")
	}
	if followRelay(at(time.Second), at(950*time.Millisecond), at(960*time.Millisecond), rtt) {
		t.Error("followed the peer to the relay although the direct path answers")
	}
}
