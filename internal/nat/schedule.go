package nat

import (
	"time"

	"github.com/keymesh/keymesh/internal/wire"
)

// Intervals of the punching schedule and of direct-path upkeep.
const (
	// PunchInterval is how often each candidate of a remote peer is probed
	// while punching.
	PunchInterval = 200 * time.Millisecond
	// PunchDuration is how long punching lasts after the rendezvous' Start
	// moment (or after a PathUpdate). 25 rounds at PunchInterval.
	PunchDuration = 5 * time.Second
	// KeepaliveInterval is how often an idle active direct path is probed:
	// it keeps both NAT mappings alive, well inside conntrack's 30 s.
	KeepaliveInterval = 5 * time.Second
	// ActiveProbeInterval is how often the active direct path is probed
	// while traffic flows on it, so that its loss is noticed quickly.
	ActiveProbeInterval = 500 * time.Millisecond
	// TrafficWindow is how recently data must have been sent to a peer for
	// its direct path to be probed at ActiveProbeInterval.
	TrafficWindow = 2 * time.Second
	// MissedProbes unanswered probes, the oldest sent at least DeadAfter
	// ago, declare a direct path dead; the peer falls back to the relay.
	// With ActiveProbeInterval this notices a cut within about 1.6 s.
	MissedProbes = 3
	// DeadAfter is the minimum age of the oldest unanswered probe before a
	// direct path is declared dead.
	DeadAfter = time.Second
	// UpgradeInterval is how often the candidates of a peer reached through
	// the relay are probed, looking for a direct path to upgrade to.
	UpgradeInterval = 5 * time.Second
	// RelayRebindInterval is how often the peer renews its relay binding:
	// it keeps the NAT mapping to the relay alive and the ticket fresh.
	RelayRebindInterval = 20 * time.Second
	// RelayRetryInterval is how often an unanswered relay bind is retried.
	RelayRetryInterval = time.Second
	// AddrPollInterval is how often local interface addresses are checked.
	AddrPollInterval = time.Second
	// ProbeTimeout is how long a probe's transaction is remembered.
	ProbeTimeout = 10 * time.Second
)

// Strategy is how two peers try to open a direct path, chosen from the NAT
// mapping behaviours they report.
type Strategy int

// Strategies.
const (
	// StrategyProbe probes every candidate of the other side (reflexive,
	// LAN and learned addresses) from the one socket, on the punch
	// schedule. It works whenever at least one side's mapping is
	// endpoint-independent.
	StrategyProbe Strategy = iota
	// StrategyRelayOnly skips punching: both NATs pick a port per
	// destination, so the pair stays on the relay (upgrade probes still
	// run, at UpgradeInterval).
	StrategyRelayOnly
	// StrategyBirthdayHard is the hard side of birthday-paradox punching
	// (this side's NAT maps per destination, the other's does not): open
	// BirthdaySockets extra sockets and probe the other side's reflexive
	// address from each, so that its random probes find one of their
	// mappings. Plain probing runs as well.
	StrategyBirthdayHard
	// StrategyBirthdayEasy is the easy side of birthday-paradox punching:
	// probe up to BirthdayProbes random ports of the hard side's public
	// address, BirthdayRate per second, until one answers. Plain probing
	// runs as well.
	StrategyBirthdayEasy
)

// Birthday-paradox punching. With BirthdaySockets mappings open on the hard
// NAT among about 64,500 ports, BirthdayProbes random probes miss every one
// of them with probability (1-256/64512)^2048, about 0.03%.
const (
	// BirthdaySockets is how many extra sockets the hard side opens.
	BirthdaySockets = 256
	// BirthdayProbes is the most probes the easy side sprays.
	BirthdayProbes = 2048
	// BirthdayRate is the easy side's probes per second: slow enough not
	// to flood NAT tables or look like a port scan burst, fast enough to
	// finish within about two seconds.
	BirthdayRate = 1000
	// BirthdayResend is how often the hard side probes again from every
	// extra socket (keeps its mappings open, and answers the spray's hit).
	BirthdayResend = time.Second
	// BirthdayWindow is how long the hard side keeps its extra sockets
	// open when no probe arrives.
	BirthdayWindow = 6 * time.Second
	// BirthdayKeep is how long the hard side keeps the winning socket
	// after its path fell back, waiting for it to come back.
	BirthdayKeep = 30 * time.Second
	// BirthdayMinPort and BirthdayMaxPort bound the sprayed ports.
	BirthdayMinPort = 1024
	BirthdayMaxPort = 65535
)

func (s Strategy) String() string {
	switch s {
	case StrategyProbe:
		return "probe"
	case StrategyRelayOnly:
		return "relay-only"
	case StrategyBirthdayHard:
		return "birthday-hard"
	case StrategyBirthdayEasy:
		return "birthday-easy"
	}
	return "unknown"
}

// hard reports whether a reported NAT behaviour maps per destination.
func hard(n wire.NAT) bool { return n == wire.NATAddrDependent || n == wire.NATAddrPortDepend }

// ChooseStrategy picks the strategy for a local and a remote NAT behaviour
// (unknown counts as easy: probing costs little). The
// birthday strategies need both behaviours known: one side hard, the other
// endpoint-independent.
func ChooseStrategy(local, remote wire.NAT) Strategy {
	if local == wire.NATUDPBlocked || remote == wire.NATUDPBlocked {
		return StrategyRelayOnly // one side speaks only through a stream tunnel
	}
	switch {
	case hard(local) && hard(remote):
		return StrategyRelayOnly
	case hard(local) && remote == wire.NATEndpointIndep:
		return StrategyBirthdayHard
	case local == wire.NATEndpointIndep && hard(remote):
		return StrategyBirthdayEasy
	}
	return StrategyProbe
}

// Schedule is one punching round: probes every PunchInterval from Start
// until Start+PunchDuration.
type Schedule struct {
	Start    time.Time
	Interval time.Duration
	Duration time.Duration
}

// NewSchedule returns the punching schedule starting at start. A zero or
// long-past start (the rendezvous' clock may differ from ours) starts now.
func NewSchedule(start, now time.Time) Schedule {
	if start.IsZero() || start.Before(now.Add(-PunchDuration)) {
		start = now
	}
	// A start far in the future means skewed clocks: never wait more than
	// a second.
	if start.After(now.Add(time.Second)) {
		start = now
	}
	return Schedule{Start: start, Interval: PunchInterval, Duration: PunchDuration}
}

// Active reports whether now lies inside the schedule.
func (s Schedule) Active(now time.Time) bool {
	return !now.Before(s.Start) && now.Before(s.Start.Add(s.Duration))
}

// Due reports whether a candidate last probed at last must be probed now.
func (s Schedule) Due(now, last time.Time) bool {
	return s.Active(now) && (last.IsZero() || now.Sub(last) >= s.Interval || last.Before(s.Start))
}

// ProbeInterval is how often the active direct path is probed: fast while
// traffic flowed within TrafficWindow, at KeepaliveInterval otherwise.
func ProbeInterval(now, lastTraffic time.Time) time.Duration {
	if !lastTraffic.IsZero() && now.Sub(lastTraffic) < TrafficWindow {
		return ActiveProbeInterval
	}
	return KeepaliveInterval
}

// Dead reports whether a direct path with unanswered probes, the oldest
// sent at firstUnanswered, must be given up.
func Dead(now time.Time, unanswered int, firstUnanswered time.Time) bool {
	return unanswered >= MissedProbes && now.Sub(firstUnanswered) >= DeadAfter
}
