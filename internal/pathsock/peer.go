package pathsock

import (
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/nat"
	"github.com/keymesh/keymesh/internal/wire"
)

// maxCands bounds a peer's candidate set (published plus learned).
const maxCands = 24

// Path kinds.
const (
	PathNone   = "none"
	PathDirect = "direct"
	PathRelay  = "relay"
)

// route is a peer's active path; replaced whole, read without locks by
// WriteTo.
type route struct {
	kind   string
	addr   netip.AddrPort // direct: the peer's address
	ticket []byte         // relay: the peer's ticket
	via    *extra         // direct: the birthday socket it goes from; nil: the main socket
}

// cand is one direct address of a peer and what probing it showed.
type cand struct {
	addr            netip.AddrPort
	learned         bool // seen as a source address, not published
	added           time.Time
	lastSent        time.Time
	lastReply       time.Time
	rtt             time.Duration
	unanswered      int
	firstUnanswered time.Time
	via             *extra // the socket probes go from; nil: the main socket
	budgetUsed      int    // probes sent unproven in this punch (candBudget)
}

// peer is one remote peer's path state. The fields above mu are set once
// or atomic (read by the data path without locks).
type peer struct {
	id     crypto.PeerID
	tag    uint64
	vaddr  *net.UDPAddr
	shared *[32]byte

	route atomic.Pointer[route]
	// met is closed when the first frame from the peer arrives (heard):
	// a Ping whose probe the peer dropped, not knowing us yet, probes
	// again then. Nil in a peer not made by ensurePeer.
	met      chan struct{}
	metOnce  sync.Once
	lastSent atomic.Int64 // unix ns of the last QUIC packet sent
	lastSeen atomic.Int64 // unix ns of the last frame received
	// lastDirect is the unix ns of the last frame received over the
	// active direct path: frames through the relay say nothing of it.
	lastDirect atomic.Int64
	// resent keeps the last packets sent, for a resend on revival.
	resent resendRing

	// mu guards every field below it (the state machine of fsm.go runs
	// under it: methods named ...Locked), and each cand in cands.
	mu         sync.Mutex
	cands      map[netip.AddrPort]*cand
	tickets    [][]byte
	reflexive  netip.AddrPort // as the rendezvous saw it (Punch, ConnectReply)
	nat        wire.NAT
	punch      nat.Schedule
	punchAt    time.Time // when the schedule last (re)started
	budget     float64   // unproven probes left (peerBudget bucket)
	budgetAt   time.Time // last refill of budget
	bdayAt     time.Time // when the last birthday punch with it started
	lastUpdate int64     // Time of the last PathUpdate applied
	relayRTT   time.Duration
	lastProbeR time.Time // last relay probe
	refreshed  time.Time // last AddPeer
	bday       *birthday // the hard side's running birthday punch
	sprayUntil time.Time // the easy side sprays until then
	kept       *extra    // the birthday socket that won, kept for the path
	keptLost   time.Time // when the route stopped using kept
	directLost time.Time // when the direct path was last given up for the relay
	answered   time.Time // when this side last answered its PathUpdate (answerUpdateLocked)
	// relayLostSeen is the peer's lastSeen when its relay path was last
	// found lost: one reaction per silence.
	relayLostSeen time.Time
}

// PeerStatus is a peer's path as the layer sees it.
type PeerStatus struct {
	ID       crypto.PeerID
	Path     string         // PathDirect, PathRelay or PathNone
	Remote   netip.AddrPort // the peer's address (direct) or the relay's
	RTT      time.Duration  // of the active path's last probe
	LastSeen time.Time      // last frame received from the peer
	// Birthday is set when the direct path goes from one of the extra
	// sockets of birthday-paradox punching rather than the main socket.
	Birthday bool
}

// AddPeer learns (or refreshes) where a peer can be reached, from the
// rendezvous' Punch or ConnectReply, and starts punching at start. The
// relay path is usable at once when the peer published a ticket.
func (s *Sock) AddPeer(info wire.PeerInfo, start time.Time) error {
	if info.ID == s.me {
		return nil
	}
	pr, err := s.ensurePeer(info.ID)
	if err != nil {
		return err
	}
	now := s.now()
	pr.mu.Lock()
	s.applyInfoLocked(pr, info, true, now)
	if info.Reflexive.IsValid() && s.candOK(info.Reflexive.Addr(), true) {
		// Only the rendezvous' word: a PathUpdate's reflexive address is
		// the peer's own claim, never a birthday target.
		pr.reflexive = unmap(info.Reflexive)
	}
	pr.refreshed = now
	strategy := nat.ChooseStrategy(s.cfg.NAT(), pr.nat)
	// A repeated Punch within punchWindow leaves the running schedule
	// (and its spent budgets) alone: candidates it adds are probed by it.
	again := !pr.punchAt.IsZero() && now.Sub(pr.punchAt) < punchWindow
	var due []netip.AddrPort
	if !s.noDirect() && strategy != nat.StrategyRelayOnly && !again {
		s.newPunchLocked(pr, start, now)
		if start.Before(now) {
			// A late Punch, its start already past when it came (the
			// rendezvous held it while this peer's home moved): punch
			// now, not at the next tick. One on time waits for the ticks.
			for a, c := range pr.cands {
				if pr.punch.Due(now, c.lastSent) {
					due = append(due, a)
				}
			}
		}
	}
	s.fixRouteLocked(pr)
	pr.mu.Unlock()
	for _, a := range due {
		s.sendProbe(pr, true, a, nil)
	}
	if pr.lastSeen.Load() == 0 && pr.route.Load().kind == PathRelay {
		// A peer never heard from gets one probe through the relay now,
		// not at start: if it asked for us (this is its Punch), its
		// probes and first packets sent before we knew it were dropped,
		// and this tells it at once that we know it now (its Ping
		// probes again: Ping).
		s.sendProbe(pr, false, netip.AddrPort{}, nil)
	}
	if !s.noDirect() && !again {
		s.startBirthday(pr, strategy, pr.punch.Start, false)
	}
	s.log.Debug("peer added", "peer", info.ID.Short(), "candidates", len(pr.cands), "tickets", len(info.Tickets))
	s.flushStash(pr)
	return nil
}

// ensurePeer returns the peer's state, creating it.
func (s *Sock) ensurePeer(id crypto.PeerID) (*peer, error) {
	s.mu.RLock()
	pr := s.byAddr[id.OverlayAddr()]
	s.mu.RUnlock()
	if pr != nil {
		return pr, nil
	}
	shared, err := s.keys.get(id)
	if err != nil {
		return nil, err
	}
	pr = &peer{id: id, tag: id.Tag(), vaddr: VirtualAddr(id), shared: shared, cands: map[netip.AddrPort]*cand{}, met: make(chan struct{})}
	pr.route.Store(&route{kind: PathNone})
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.byAddr[id.OverlayAddr()]; old != nil {
		return old, nil
	}
	s.byAddr[id.OverlayAddr()] = pr
	s.byTag[pr.tag] = pr
	return pr, nil
}

// applyInfoLocked merges published addresses and tickets. attested says that
// info comes from the rendezvous, whose Reflexive is the address it saw
// the peer's packets come from. pr.mu is held.
func (s *Sock) applyInfoLocked(pr *peer, info wire.PeerInfo, attested bool, now time.Time) {
	var tickets [][]byte
	for _, t := range info.Tickets {
		if len(t) == crypto.TicketSize {
			tickets = append(tickets, slices.Clone(t))
		}
	}
	if len(tickets) > 0 {
		pr.tickets = tickets
	}
	if info.NAT != 0 {
		pr.nat = info.NAT
	}
	s.addCandLocked(pr, info.Reflexive, false, attested, now)
	for _, a := range info.Candidates {
		s.addCandLocked(pr, a, false, false, now)
	}
}

// addCandLocked adds a direct candidate if the socket can use it (candOK; a
// private address the rendezvous saw the peer at, attested, is the peer's
// own). pr.mu is held.
func (s *Sock) addCandLocked(pr *peer, a netip.AddrPort, learned, attested bool, now time.Time) *cand {
	a = unmap(a)
	if !a.IsValid() || a.Port() == 0 || !s.candOK(a.Addr(), attested) || !s.canSendTo(a) {
		return nil
	}
	if c := pr.cands[a]; c != nil {
		if !learned {
			c.learned = false
		}
		return c
	}
	if len(pr.cands) >= maxCands {
		// Evict the oldest learned candidate that is not active.
		active := pr.route.Load()
		var victim *cand
		for _, c := range pr.cands {
			if (active.kind == PathDirect && c.addr == active.addr) || !c.learned {
				continue
			}
			if victim == nil || c.added.Before(victim.added) {
				victim = c
			}
		}
		if victim == nil {
			return nil
		}
		delete(pr.cands, victim.addr)
	}
	c := &cand{addr: a, learned: learned, added: now}
	pr.cands[a] = c
	return c
}

// canSendTo reports whether the socket's family can reach a.
func (s *Sock) canSendTo(a netip.AddrPort) bool {
	bound := s.LocalAddrPort().Addr()
	if bound.Is4() || bound.Is4In6() {
		return a.Addr().Is4()
	}
	if bound.Is6() && !bound.IsUnspecified() {
		return a.Addr().Is6() && !a.Addr().Is4In6()
	}
	return true
}

// fixRouteLocked sets a usable route when the peer has none: the relay when a
// ticket is known. pr.mu is held.
func (s *Sock) fixRouteLocked(pr *peer) {
	r := pr.route.Load()
	switch r.kind {
	case PathDirect:
		return
	case PathRelay:
		if len(pr.tickets) > 0 && !slices.Equal(r.ticket, pr.tickets[0]) {
			pr.route.Store(&route{kind: PathRelay, ticket: pr.tickets[0]})
		}
		return
	}
	if len(pr.tickets) > 0 {
		pr.route.Store(&route{kind: PathRelay, ticket: pr.tickets[0]})
	}
}

// relayRouteLocked is the route through the relay, or none. pr.mu is held.
func (pr *peer) relayRouteLocked() *route {
	if len(pr.tickets) == 0 {
		return &route{kind: PathNone}
	}
	return &route{kind: PathRelay, ticket: pr.tickets[0]}
}

func (s *Sock) peerByID(id crypto.PeerID) *peer {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byAddr[id.OverlayAddr()]
}

// RemovePeer forgets a peer's path state.
func (s *Sock) RemovePeer(id crypto.PeerID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pr := s.byAddr[id.OverlayAddr()]; pr != nil {
		delete(s.byAddr, id.OverlayAddr())
		if s.byTag[pr.tag] == pr {
			delete(s.byTag, pr.tag)
		}
	}
}

func (s *Sock) peers() []*peer {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*peer, 0, len(s.byAddr))
	for _, pr := range s.byAddr {
		out = append(out, pr)
	}
	return out
}

// Peer returns one peer's path state.
func (s *Sock) Peer(id crypto.PeerID) (PeerStatus, bool) {
	pr := s.peerByID(id)
	if pr == nil {
		return PeerStatus{}, false
	}
	return s.status(pr), true
}

// Peers returns every known peer's path state, ordered by peer ID.
func (s *Sock) Peers() []PeerStatus {
	ps := s.peers()
	out := make([]PeerStatus, 0, len(ps))
	for _, pr := range ps {
		out = append(out, s.status(pr))
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return slices.Compare(a.ID[:], b.ID[:]) })
	return out
}

func (s *Sock) status(pr *peer) PeerStatus {
	r := pr.route.Load()
	st := PeerStatus{ID: pr.id, Path: r.kind}
	if ns := pr.lastSeen.Load(); ns != 0 {
		st.LastSeen = time.Unix(0, ns)
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	switch r.kind {
	case PathDirect:
		st.Remote = r.addr
		st.Birthday = r.via != nil
		if c := pr.cands[r.addr]; c != nil {
			st.RTT = c.rtt
		}
	case PathRelay:
		st.Remote = s.relay.chosenAddr()
		st.RTT = pr.relayRTT
	}
	return st
}

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}
