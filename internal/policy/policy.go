package policy

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/keymesh/keymesh/internal/crypto"
)

// Logging of refusals: at most LogBurst lines at once, then LogRate a
// second; refusals beyond are counted, not logged.
const (
	LogBurst = 20
	LogRate  = 5
)

// Kinds of refusal, the label of keymesh_peer_policy_refused_total.
const (
	KindSession = "session" // a peer with no rule opened a session
	KindTCP     = "tcp"     // a stream or TCP flow to a port no rule allows
	KindUDP     = "udp"     // a UDP flow to a port no rule allows
)

// Kinds lists the kinds of refusal.
var Kinds = []string{KindSession, KindTCP, KindUDP}

// Config configures a Policy.
type Config struct {
	// Rules are the allow rules (ParseRules). No rule and no AllowAny:
	// every peer is refused.
	Rules []Rule
	// AllowAny allows every peer every port (--allow-any).
	AllowAny bool
	// Logger gets one line per refusal; default discards.
	Logger *slog.Logger
	// Now is the clock of the log limiter; default time.Now.
	Now func() time.Time
}

// Policy is a set of allow rules. Its methods are safe for concurrent use.
type Policy struct {
	rules    []Rule
	any      bool
	byPeer   map[crypto.PeerID][]int // rule indexes per peer
	byAddr   map[netip.Addr]crypto.PeerID
	wildcard []int // rules for any peer
	log      *slog.Logger
	now      func() time.Time
	refused  [3]atomic.Uint64 // by index in Kinds

	mu           sync.Mutex
	limiter      *rate.Limiter
	suppressed   uint64 // refusals not logged since the last line
	refusedFlows map[flowKey]time.Time
}

// New makes a Policy.
func New(cfg Config) *Policy {
	p := &Policy{
		rules:        append([]Rule(nil), cfg.Rules...),
		any:          cfg.AllowAny,
		byPeer:       map[crypto.PeerID][]int{},
		byAddr:       map[netip.Addr]crypto.PeerID{},
		log:          cfg.Logger,
		now:          cfg.Now,
		limiter:      rate.NewLimiter(LogRate, LogBurst),
		refusedFlows: map[flowKey]time.Time{},
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	for i, r := range p.rules {
		if r.AnyPeer {
			p.wildcard = append(p.wildcard, i)
		} else {
			p.byPeer[r.Peer] = append(p.byPeer[r.Peer], i)
			p.byAddr[r.Peer.OverlayAddr()] = r.Peer
		}
	}
	return p
}

// AnyPeer reports whether every peer may open a session (--allow-any, or a
// rule for *): what the rendezvous server is told.
func (p *Policy) AnyPeer() bool { return p.any || len(p.wildcard) > 0 }

// Peers returns the peers that rules name, for the rendezvous server's
// list of who may connect.
func (p *Policy) Peers() []crypto.PeerID {
	var out []crypto.PeerID
	seen := map[crypto.PeerID]bool{}
	for _, r := range p.rules {
		if !r.AnyPeer && !seen[r.Peer] {
			seen[r.Peer] = true
			out = append(out, r.Peer)
		}
	}
	return out
}

// Rules returns a copy of the rules.
func (p *Policy) Rules() []Rule { return append([]Rule(nil), p.rules...) }

// AllowPeer reports whether peer may open a session at all: some rule
// names it or any peer. A refusal is logged and counted.
func (p *Policy) AllowPeer(peer crypto.PeerID) bool {
	if p.AnyPeer() || len(p.byPeer[peer]) > 0 {
		return true
	}
	p.refuse(KindSession, peer.String(), 0, "start the daemon with --allow "+peer.String()+" or --allow-any")
	return false
}

// Allow reports whether peer may reach port over proto (TCP for streams).
// A refusal is logged and counted: call it once per new flow.
func (p *Policy) Allow(peer crypto.PeerID, proto Proto, port uint16) bool {
	if p.Check(peer, proto, port) {
		return true
	}
	kind := KindTCP
	if proto == UDP {
		kind = KindUDP
	}
	p.refuse(kind, peer.String(), port, "allow it with --allow "+peer.String()+":"+PortRange{Lo: port, Hi: port, Proto: proto}.String())
	return false
}

// Check is Allow without logging or counting.
func (p *Policy) Check(peer crypto.PeerID, proto Proto, port uint16) bool {
	if p.any {
		return true
	}
	return p.check(peer, true, proto, port)
}

// Refused returns how many flows of kind (one of Kinds) were refused.
func (p *Policy) Refused(kind string) uint64 {
	for i, k := range Kinds {
		if k == kind {
			return p.refused[i].Load()
		}
	}
	return 0
}

func (p *Policy) refuse(kind, peer string, port uint16, hint string) {
	for i, k := range Kinds {
		if k == kind {
			p.refused[i].Add(1)
		}
	}
	p.mu.Lock()
	if !p.limiter.AllowN(p.now(), 1) {
		p.suppressed++
		p.mu.Unlock()
		return
	}
	unlogged := p.suppressed
	p.suppressed = 0
	p.mu.Unlock()
	attrs := []any{"kind", kind, "peer", peer}
	if kind != KindSession {
		attrs = append(attrs, "port", port)
	}
	attrs = append(attrs, "hint", hint)
	if unlogged > 0 {
		attrs = append(attrs, "unlogged_before", unlogged)
	}
	p.log.Warn("policy refused a flow", attrs...)
}
