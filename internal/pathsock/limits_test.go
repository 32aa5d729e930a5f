package pathsock

import (
	"net/netip"
	"testing"
	"time"
)

// TestLimitsConfigurable: the reflection bounds come from Config.Limits: a
// candidate gets CandidateProbes probes, all of a peer's candidates
// PeerProbes together, and one destination DestBurst; zero fields are the
// defaults.
func TestLimitsConfigurable(t *testing.T) {
	if got := (Limits{}).withDefaults(); got.CandidateProbes != candBudget || got.PeerProbes != peerBudget ||
		got.UnprovenRate != unprovenRate || got.DestBurst != destBurst || got.ReplyRate != replyRate ||
		got.MaxBirthdaySockets != maxBirthdaySockets || got.MaxSprays != maxSprays {
		t.Fatalf("zero Limits became %+v, want the defaults", got)
	}
	s := newTestSock(t, func(c *Config) {
		c.Limits = Limits{CandidateProbes: 2, PeerProbes: 3, DestRate: 1, DestBurst: 4}
	})
	now := time.Now()
	count := func(pr *peer, c *cand) int {
		n := 0
		for range 50 {
			if s.allowUnprovenLocked(pr, c, now) {
				n++
			}
		}
		return n
	}
	pr := &peer{}
	a := &cand{addr: netip.MustParseAddrPort("198.51.100.1:1000")}
	b := &cand{addr: netip.MustParseAddrPort("198.51.100.2:1000")}
	if n := count(pr, a); n != 2 {
		t.Errorf("one candidate got %d probes, want CandidateProbes = 2", n)
	}
	if n := count(pr, b); n != 1 {
		t.Errorf("the second candidate got %d probes, want what is left of PeerProbes = 3: 1", n)
	}
	// Another peer naming the same destination: DestBurst 4 is shared, 1 left.
	other := &peer{}
	c := &cand{addr: netip.MustParseAddrPort("198.51.100.1:2000")}
	d := &cand{addr: netip.MustParseAddrPort("198.51.100.1:3000")}
	if n := count(other, c) + count(other, d); n != 2 {
		t.Errorf("a destination named by two peers got %d more probes, want DestBurst 4 less the 2 spent: 2", n)
	}
}
