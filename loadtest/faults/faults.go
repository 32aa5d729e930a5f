// Package faults measures how the data path survives faults, in the NAT lab
// of package natlab with the real binaries (package labrun): two peers keep
// a paced stream (`peer pipe` into `peer listen`) while one fault is
// injected, and each run reports the longest gap in delivered bytes, the
// time until data flows again, the time until the best path (the one used
// before the fault) is back, and whether every byte arrived (SHA-256 on
// both ends). It backs the `loadtest faults` command (Main) and its CI short form.
//
//	lab, _ := labrun.Start(ctx, labrun.Config{Bins: bins})
//	defer lab.Close()
//	f, _ := faults.Parse("nat-flush/symmetric")
//	res := faults.Run(ctx, lab, f, faults.Options{Rate: 4 << 20, Size: 40 << 20})
package faults

import (
	"fmt"
	"strings"
	"time"

	"github.com/keymesh/keymesh/internal/natlab"
)

// Kind is what a fault does.
type Kind string

// The faults the lab can inject.
const (
	// DirectCut drops UDP between the two sites' public addresses for
	// Options.Hold, then lets it through again: the path falls back to
	// the relay and must come back to direct once the cut is lifted.
	DirectCut Kind = "direct-cut"
	// RelayRestart kills the relay (SIGKILL) and starts it again 500 ms
	// later with the same ticket keys, while both peers relay only.
	RelayRestart Kind = "relay-restart"
	// RendezvousRestart kills the rendezvous (memory registry) and starts
	// it again with the same key; a third peer, registered before, then
	// opens a new session to B (Result.NewSession).
	RendezvousRestart Kind = "rendezvous-restart"
	// RendezvousKill kills region r1's rendezvous instance (SIGKILL) in a
	// lab of two regions sharing a Redis registry, every site homed on
	// r1: the front door moves its flows to r2, and a third peer opens a
	// new session to B (Result.NewSession, from the kill).
	RendezvousKill Kind = "rendezvous-kill"
	// RedisRestart kills the regions' shared Redis and starts it again
	// 500 ms later, empty; a third peer then opens a new session to B.
	RedisRestart Kind = "redis-restart"
	// RelayGone kills region r1's relay for good, both peers relaying
	// through it (relay only): region r2's relay, behind the same
	// anycast address with the same ticket keys, must take over.
	RelayGone Kind = "relay-gone"
	// NATFlush flushes every conntrack entry of A's NAT (both NATs of a
	// double NAT), as a router reboot would: every mapping is forgotten.
	NATFlush Kind = "nat-flush"
	// Move renumbers A's host in its LAN: a new address, so a new NAT
	// mapping.
	Move Kind = "move"
	// Roam moves A's host to another site's LAN (a port-restricted NAT):
	// a new LAN address behind a new NAT with a new public address, as a
	// laptop that leaves one network for another.
	Roam Kind = "roam"
	// NATIdle gives the NATs of both sites a 10 s UDP mapping timeout
	// (A's site of the fault's NAT type), pauses the stream for
	// Options.Idle (12 s: longer than the timeout) and resumes it; times
	// count from the resumption.
	NATIdle Kind = "nat-idle"
	// UDPBlock drops every UDP packet between A's site and the other
	// site and the servers for Options.Hold (at least MinUDPBlockHold),
	// then lets it through again. A, which has a TLS stream relay, must
	// move into it while UDP is blocked (its data back before the block
	// is lifted: Result.Lifted) and return to the direct path after.
	UDPBlock Kind = "udp-block"
)

// MinUDPBlockHold is the least time udp-block holds: well past the
// takeover's 2 s goal, so that what is measured is the stream relay
// taking over, not UDP coming back.
const MinUDPBlockHold = 5 * time.Second

// Fault is one fault to inject: a kind and, for NATFlush, the NAT type of
// A's site.
type Fault struct {
	Kind Kind
	NAT  natlab.NATType
}

// String is the fault's name as Parse takes it, e.g. "nat-flush/symmetric".
func (f Fault) String() string {
	if f.Kind == NATFlush || f.Kind == NATIdle {
		return string(f.Kind) + "/" + string(f.NAT)
	}
	return string(f.Kind)
}

// flushTypes are the NAT types NATFlush runs with by default: those with a
// NAT whose mappings a direct path uses.
var flushTypes = []natlab.NATType{natlab.FullCone, natlab.PortRestricted, natlab.Symmetric, natlab.Double}

// All returns every fault, in the order the command runs them.
func All() []Fault {
	out := []Fault{{Kind: DirectCut}, {Kind: RelayRestart}, {Kind: RendezvousRestart}}
	for _, t := range flushTypes {
		out = append(out, Fault{Kind: NATFlush, NAT: t})
	}
	for _, t := range flushTypes {
		out = append(out, Fault{Kind: NATIdle, NAT: t})
	}
	out = append(out, Fault{Kind: Move}, Fault{Kind: Roam}, Fault{Kind: UDPBlock})
	return append(out, Fault{Kind: RelayGone}, Fault{Kind: RendezvousKill}, Fault{Kind: RedisRestart})
}

// Regions reports whether the fault needs a lab of two regions behind
// anycast addresses with a shared Redis (labrun.Config.Regions = 2);
// the others run in the one-server lab.
func (f Fault) Regions() bool {
	return f.Kind == RelayGone || f.Kind == RendezvousKill || f.Kind == RedisRestart
}

// newSession reports whether the fault is a server's, after which a third
// peer, registered before, opens a new session to B.
func (f Fault) newSession() bool {
	return f.Kind == RendezvousRestart || f.Kind == RendezvousKill || f.Kind == RedisRestart
}

// Names returns the names of All, comma-separated.
func Names() string {
	var s []string
	for _, f := range All() {
		s = append(s, f.String())
	}
	return strings.Join(s, ",")
}

// Parse returns the fault named s: a name from Names, or "nat-flush" or
// "nat-idle" for every NAT type's (so it may return several).
func Parse(s string) ([]Fault, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == string(NATFlush) || s == string(NATIdle) {
		var out []Fault
		for _, t := range flushTypes {
			out = append(out, Fault{Kind: Kind(s), NAT: t})
		}
		return out, nil
	}
	for _, f := range All() {
		if f.String() == s {
			return []Fault{f}, nil
		}
	}
	return nil, fmt.Errorf("unknown fault %q: want one of %s, or nat-flush or nat-idle for all their types", s, Names())
}

// ParseList parses a comma-separated list of faults ("all": every one).
func ParseList(s string) ([]Fault, error) {
	if strings.TrimSpace(s) == "all" {
		return All(), nil
	}
	var out []Fault
	seen := map[Fault]bool{}
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		fs, err := Parse(part)
		if err != nil {
			return nil, err
		}
		for _, f := range fs {
			if !seen[f] {
				seen[f] = true
				out = append(out, f)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no fault in %q: want one or more of %s", s, Names())
	}
	return out, nil
}

// sites returns the NAT types of A's and B's sites for fault f.
func (f Fault) sites() (a, b natlab.NATType) {
	switch f.Kind {
	case NATFlush, NATIdle:
		return f.NAT, natlab.PortRestricted
	case RelayRestart, RelayGone:
		return natlab.PortRestricted, natlab.Symmetric
	}
	return natlab.PortRestricted, natlab.PortRestricted
}
