package pathsock

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/nat"
	"github.com/keymesh/keymesh/internal/wire"
)

// ticketRefresh is how often every peer is sent a PathUpdate even when
// nothing changed, so that its copy of this peer's relay ticket never
// expires (relay tickets live about ten minutes).
const ticketRefresh = 4 * time.Minute

// announceRounds PathUpdates go out after a change, announceGap apart: the
// first at once, the next ones carrying the new relay ticket and reflexive
// address as they arrive.
const (
	announceRounds = 3
	announceGap    = time.Second
)

// localState is what this peer knows about its own addresses.
type localState struct {
	mu           sync.Mutex // guards every field
	cands        []netip.AddrPort
	prefixes     []netip.Prefix // this peer's LAN prefixes (candOK)
	reflexive    netip.AddrPort
	rounds       int
	next         time.Time
	lastAnnounce time.Time
}

// refreshLocal recomputes the local candidates; it reports a change.
func (s *Sock) refreshLocal() bool {
	ifs, err := s.cfg.Interfaces()
	if err != nil {
		s.log.Debug("interface addresses", "err", err)
		return false
	}
	cands := nat.LocalCandidates(s.LocalAddrPort(), ifs)
	prefixes, perr := s.cfg.LocalPrefixes()
	s.local.mu.Lock()
	defer s.local.mu.Unlock()
	if perr == nil {
		s.local.prefixes = prefixes
	}
	if slices.Equal(cands, s.local.cands) {
		return false
	}
	s.local.cands = cands
	return true
}

// Candidates returns this peer's local candidates (for registration).
func (s *Sock) Candidates() []netip.AddrPort {
	s.local.mu.Lock()
	defer s.local.mu.Unlock()
	return slices.Clone(s.local.cands)
}

// Reflexive returns this peer's address as the rendezvous last saw it.
func (s *Sock) Reflexive() netip.AddrPort {
	s.local.mu.Lock()
	defer s.local.mu.Unlock()
	return s.local.reflexive
}

// SetRegistered takes what the rendezvous said in Registered: the reflexive
// address (a change of it is an address change) and the relays to bind.
func (s *Sock) SetRegistered(reflexive netip.AddrPort, relays []string) {
	reflexive = unmap(reflexive)
	s.local.mu.Lock()
	prev := s.local.reflexive
	s.local.reflexive = reflexive
	s.local.mu.Unlock()
	s.SetRelays(relays)
	if prev.IsValid() && reflexive.IsValid() && prev != reflexive {
		s.checkNAT(true)
		s.localChanged("reflexive address changed")
		return
	}
	s.checkNAT(false)
}

// NATBehaviour is this peer's NAT mapping behaviour (a wire.NAT),
// found without extra servers: the rendezvous and the relay sit at two
// destinations, and each reports the address it saw. The same public
// address with the same port is an endpoint-independent mapping, with
// different ports one that maps per destination; a reflexive address that
// is a local one means no NAT. Unknown until both answered; UDP blocked in
// a stream tunnel.
func (s *Sock) NATBehaviour() wire.NAT {
	if s.Tunneled() {
		return wire.NATUDPBlocked
	}
	refl := s.Reflexive()
	if !refl.IsValid() {
		return wire.NATUnknown
	}
	if refl == s.LocalAddrPort() {
		return wire.NATNone
	}
	for _, c := range s.Candidates() {
		if c == refl {
			return wire.NATNone
		}
	}
	r, ok := s.Relay()
	if !ok || !r.Observed.IsValid() || r.Observed.Addr() != refl.Addr() {
		return wire.NATUnknown
	}
	if r.Observed.Port() == refl.Port() {
		return wire.NATEndpointIndep
	}
	return wire.NATAddrPortDepend
}

// checkNAT notices a change of the NAT behaviour: the registration must
// publish it (unless the caller re-registers anyway, announced set).
func (s *Sock) checkNAT(announced bool) {
	nb := uint32(s.NATBehaviour()) + 1
	prev := s.natSeen.Swap(nb)
	if prev == nb || announced {
		return
	}
	if prev != 0 || nb != uint32(wire.NATUnknown)+1 {
		s.log.Info("NAT behaviour", "nat", nb-1)
		s.localChanged("NAT behaviour changed")
	}
}

// localChanged reacts to a change of this peer's addresses or tickets:
// re-register, re-bind the relay, tell every peer.
func (s *Sock) localChanged(reason string) {
	if s.isClosed() {
		return
	}
	s.log.Info("local addresses changed", "reason", reason, "candidates", s.Candidates())
	s.forceRebind()
	s.local.mu.Lock()
	s.local.rounds = announceRounds
	s.local.next = time.Time{}
	s.local.mu.Unlock()
	if s.cfg.OnLocalChange != nil {
		go s.cfg.OnLocalChange()
	}
}

// tickAnnounce sends due PathUpdates.
func (s *Sock) tickAnnounce(now time.Time) {
	s.local.mu.Lock()
	due := s.local.rounds > 0 && !now.Before(s.local.next)
	if due {
		s.local.rounds--
		s.local.next = now.Add(announceGap)
	} else if now.Sub(s.local.lastAnnounce) >= ticketRefresh {
		due = true
	}
	if due {
		s.local.lastAnnounce = now
	}
	s.local.mu.Unlock()
	if due {
		s.announce(now)
	}
}

// Info is this peer's PeerInfo as it would announce it.
func (s *Sock) Info() wire.PeerInfo {
	info := wire.PeerInfo{
		ID:         s.me,
		Reflexive:  s.Reflexive(),
		Candidates: s.Candidates(),
		Tickets:    s.Tickets(),
		NAT:        s.cfg.NAT(),
	}
	if !info.Reflexive.IsValid() {
		if r, ok := s.Relay(); ok {
			info.Reflexive = r.Observed
		}
	}
	return info
}

// announce sends every peer a PathUpdate over its active direct path, over
// other recently answering direct paths, and through the relay.
func (s *Sock) announce(now time.Time) {
	info := s.Info()
	for _, pr := range s.peers() {
		s.announceTo(pr, info, now)
	}
}

// announcing reports whether this peer announced a change lately (within
// announceGap before now) or has rounds of it still to send.
func (s *Sock) announcing(now time.Time) bool {
	s.local.mu.Lock()
	defer s.local.mu.Unlock()
	return s.local.rounds > 0 || (!s.local.lastAnnounce.IsZero() && now.Sub(s.local.lastAnnounce) < announceGap)
}

// announceTo sends pr a PathUpdate with info (see announce).
func (s *Sock) announceTo(pr *peer, info wire.PeerInfo, now time.Time) {
	var direct []netip.AddrPort
	var vias []*extra
	var ticket []byte
	pr.mu.Lock()
	r := pr.route.Load()
	if r.kind == PathDirect {
		direct = append(direct, r.addr)
		vias = append(vias, r.via)
	}
	for a, c := range pr.cands {
		if (r.kind != PathDirect || a != r.addr) && now.Sub(c.lastReply) < 10*time.Second {
			direct = append(direct, a)
			vias = append(vias, c.via)
		}
	}
	if len(pr.tickets) > 0 {
		ticket = pr.tickets[0]
	}
	pr.mu.Unlock()
	u := &wire.PathUpdate{Info: info}
	if !s.noDirect() {
		for i, a := range direct {
			s.sendControlVia(pr, u, true, a, nil, vias[i])
		}
	}
	if ticket != nil {
		s.sendControl(pr, u, false, netip.AddrPort{}, ticket)
	}
}
