package pathsock

import (
	"net"
	"net/netip"
	"time"

	"github.com/keymesh/keymesh/internal/nat"
	"github.com/keymesh/keymesh/internal/ratelimit"
)

// What a peer sends on a stranger's word. A Connect to an --allow-any peer
// (through the rendezvous' Punch) or a peer's PathUpdate names up to 16
// addresses; until an address answers a probe with an authenticated
// ProbeReply it is unproven, and the layer bounds what it sends there, so
// that a peer is not a reflector for whoever can make a key. Limits holds
// the bounds an operator may change; these are their defaults and the
// fixed ones.
const (
	// DefaultCandidateProbes is how many probes one unproven candidate
	// gets per punch (eight rounds of nat.PunchInterval: 1.6 s of the
	// schedule).
	DefaultCandidateProbes = 8
	// DefaultPeerProbes is how many probes all unproven candidates of one
	// peer get together: a token bucket of that size, refilled by as many
	// every punchWindow.
	DefaultPeerProbes = 24
	// DefaultUnprovenRate and DefaultUnprovenBurst bound probes to
	// unproven addresses across every peer (the global cap on reflection,
	// about 25 KB/s).
	DefaultUnprovenRate  = 200
	DefaultUnprovenBurst = 400
	// DefaultDestRate and DefaultDestBurst bound probes to unproven
	// addresses per destination IPv4 address or IPv6 /64, across every
	// peer.
	DefaultDestRate  = 20
	DefaultDestBurst = 40
	// DefaultReplyRate and DefaultReplyBurst bound direct ProbeReplies per
	// source IPv4 address or IPv6 /64 that is not a proven path of the
	// prober.
	DefaultReplyRate  = 50
	DefaultReplyBurst = 100
	// DefaultMaxBirthdaySockets caps the extra sockets of birthday
	// punching open at once, across every peer (one peer's punch opens at
	// most nat.BirthdaySockets).
	DefaultMaxBirthdaySockets = 4 * nat.BirthdaySockets
	// DefaultMaxSprays caps the easy side's birthday sprays running at
	// once.
	DefaultMaxSprays = 2

	// The defaults under the names the code and tests use.
	candBudget         = DefaultCandidateProbes
	peerBudget         = DefaultPeerProbes
	unprovenRate       = DefaultUnprovenRate
	unprovenBurst      = DefaultUnprovenBurst
	destRate           = DefaultDestRate
	destBurst          = DefaultDestBurst
	replyRate          = DefaultReplyRate
	replyBurst         = DefaultReplyBurst
	maxBirthdaySockets = DefaultMaxBirthdaySockets
	maxSprays          = DefaultMaxSprays

	// punchWindow is how long a punch holds: a Punch (AddPeer) for a peer
	// whose punch started less than punchWindow ago does not restart the
	// schedule, and a peer's birthday punch does not start again within it.
	punchWindow = 30 * time.Second
	// probeMaxAge is how far a Probe's sealed timestamp may lie from this
	// peer's clock, either way: an older (replayed) probe is not answered.
	probeMaxAge = time.Minute
	// limiterSources bounds the per-address tables.
	limiterSources = 4096
)

// Limits are the reflection bounds of the path layer (see the Default*
// constants for each). A zero field takes its default.
type Limits struct {
	// CandidateProbes: probes per unproven candidate and punch.
	CandidateProbes int
	// PeerProbes: probes to all unproven candidates of one peer per 30 s.
	PeerProbes int
	// UnprovenRate and UnprovenBurst: probes per second to unproven
	// addresses, all peers together.
	UnprovenRate, UnprovenBurst float64
	// DestRate and DestBurst: probes per second to one unproven IPv4
	// address or IPv6 /64, all peers together.
	DestRate, DestBurst float64
	// ReplyRate and ReplyBurst: ProbeReplies per second to one source
	// IPv4 address or IPv6 /64 that is not a proven path.
	ReplyRate, ReplyBurst float64
	// MaxBirthdaySockets: extra birthday-punching sockets open at once.
	MaxBirthdaySockets int
	// MaxSprays: birthday sprays (the easy side) running at once.
	MaxSprays int
}

// withDefaults fills the zero fields of l.
func (l Limits) withDefaults() Limits {
	setI := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	setF := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	setI(&l.CandidateProbes, DefaultCandidateProbes)
	setI(&l.PeerProbes, DefaultPeerProbes)
	setF(&l.UnprovenRate, DefaultUnprovenRate)
	setF(&l.UnprovenBurst, DefaultUnprovenBurst)
	setF(&l.DestRate, DefaultDestRate)
	setF(&l.DestBurst, DefaultDestBurst)
	setF(&l.ReplyRate, DefaultReplyRate)
	setF(&l.ReplyBurst, DefaultReplyBurst)
	setI(&l.MaxBirthdaySockets, DefaultMaxBirthdaySockets)
	setI(&l.MaxSprays, DefaultMaxSprays)
	return l
}

// cgnat is the shared address space of carrier NATs (RFC 6598): as
// private as RFC 1918 for a peer's candidates.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// guard holds the layer's reflection limits.
type guard struct {
	unproven *ratelimit.Budget
	dest     *ratelimit.Limiter
	replies  *ratelimit.Limiter
}

func newGuard(l Limits, now time.Time) guard {
	return guard{
		unproven: ratelimit.NewBudget(l.UnprovenRate, l.UnprovenBurst, now.UnixNano()),
		dest:     ratelimit.New(ratelimit.Config{PerSecond: l.DestRate, Burst: l.DestBurst, MaxSources: limiterSources}),
		replies:  ratelimit.New(ratelimit.Config{PerSecond: l.ReplyRate, Burst: l.ReplyBurst, MaxSources: limiterSources}),
	}
}

// candOK reports whether a peer's address may be probed at all. Refused:
// unspecified, multicast, link-local, the overlay, 0.0.0.0/8 and 240.0.0.0/4
// (broadcast included); loopback unless this peer's socket is bound to
// loopback (the peers then share the host); private and CGNAT addresses
// (RFC 1918, fc00::/7, 100.64.0.0/10) unless they lie on one of this
// peer's own interface prefixes, where a peer behind the same NAT is, or
// are attested: the address the rendezvous saw the peer's packets come
// from (a deployment on a private network), which is the peer's own.
func (s *Sock) candOK(a netip.Addr, attested bool) bool {
	a = a.Unmap()
	if !nat.Usable(a) {
		return false
	}
	if a.Is4() {
		if b := a.As4()[0]; b == 0 || b >= 240 {
			return false
		}
	}
	switch {
	case a.IsLoopback():
		return s.LocalAddrPort().Addr().Unmap().IsLoopback()
	case a.IsPrivate() || cgnat.Contains(a):
		return attested || s.onLocalPrefix(a)
	}
	return true
}

// onLocalPrefix reports whether a lies on one of this peer's interface
// prefixes.
func (s *Sock) onLocalPrefix(a netip.Addr) bool {
	s.local.mu.Lock()
	defer s.local.mu.Unlock()
	for _, p := range s.local.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// allowUnprovenLocked spends the budgets for one probe to c, an unproven
// candidate of pr. pr.mu is held.
func (s *Sock) allowUnprovenLocked(pr *peer, c *cand, now time.Time) bool {
	if c.budgetUsed >= s.cfg.Limits.CandidateProbes {
		return false
	}
	pr.refillBudgetLocked(now, float64(s.cfg.Limits.PeerProbes))
	if pr.budget < 1 {
		return false
	}
	ns := now.UnixNano()
	if !s.guard.dest.Allow(ratelimit.Source(c.addr.Addr()), ns) || !s.guard.unproven.Allow(ns) {
		return false
	}
	pr.budget--
	c.budgetUsed++
	return true
}

// refillBudgetLocked refills pr's unproven-probe bucket. pr.mu is held.
func (pr *peer) refillBudgetLocked(now time.Time, size float64) {
	if pr.budgetAt.IsZero() {
		pr.budget, pr.budgetAt = size, now
		return
	}
	if d := now.Sub(pr.budgetAt); d > 0 {
		pr.budget = min(size, pr.budget+size*float64(d)/float64(punchWindow))
		pr.budgetAt = now
	}
}

// newPunchLocked starts a punching schedule for pr: each candidate's budget
// starts afresh (the peer's own bucket does not). pr.mu is held.
func (s *Sock) newPunchLocked(pr *peer, start, now time.Time) {
	pr.punch = nat.NewSchedule(start, now)
	pr.punchAt = now
	for _, c := range pr.cands {
		c.budgetUsed = 0
	}
}

// allowReply reports whether a direct ProbeReply may go to from: always to
// a proven path of pr, else within the per-source limit.
func (s *Sock) allowReply(pr *peer, from netip.AddrPort, now time.Time) bool {
	if r := pr.route.Load(); r.kind == PathDirect && r.addr == from {
		return true
	}
	pr.mu.Lock()
	c := pr.cands[from]
	proven := c != nil && !c.lastReply.IsZero()
	pr.mu.Unlock()
	return proven || s.guard.replies.Allow(ratelimit.Source(from.Addr()), now.UnixNano())
}

// fresh reports whether a peer frame's sealed time t (Unix ms) is within
// probeMaxAge of now.
func fresh(t int64, now time.Time) bool {
	d := now.Sub(time.UnixMilli(t))
	return d <= probeMaxAge && d >= -probeMaxAge
}

// interfacePrefixes lists the machine's interface prefixes.
func interfacePrefixes() ([]netip.Prefix, error) {
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Prefix, 0, len(ifas))
	for _, a := range ifas {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		out = append(out, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p.Addr())).Masked())
	}
	return out, nil
}

// unmapBits is how many prefix bits an IPv4-mapped address loses when
// unmapped.
func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}
