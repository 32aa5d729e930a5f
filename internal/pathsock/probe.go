package pathsock

import (
	"crypto/rand"
	"encoding/binary"
	"net/netip"
	"slices"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/nat"
	"github.com/keymesh/keymesh/internal/wire"
)

// Upkeep limits.
const (
	maxPending = 8192
	// birthdayPending bounds the outstanding birthday probes' share of
	// the pending table, so that they never crowd out keepalives.
	birthdayPending = maxPending - 2048
	learnedTTL      = time.Minute     // an unanswering learned candidate is forgotten
	peerIdleTTL     = 5 * time.Minute // a peer with no traffic either way is forgotten
	relayProbeEvery = 5 * time.Second // relay RTT measurement while in use
)

// probeTx is an outstanding probe.
type probeTx struct {
	peer   *peer
	direct bool
	addr   netip.AddrPort // direct: where it went; relay: the relay
	via    *extra         // direct: the birthday socket it went from
	sent   time.Time
	done   chan struct{} // Ping waits here
	fired  bool
	rtt    time.Duration
}

func newTxID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic("crypto/rand failed: " + err.Error())
		}
		if v := binary.BigEndian.Uint64(b[:]); v != 0 {
			return v
		}
	}
}

// sealTo seals a message under a shared key. The frame carries the sender's
// clock; PathUpdates carry a strictly increasing one, as receivers drop an
// update not newer than the last.
func (s *Sock) sealTo(out []byte, shared *[32]byte, body wire.Body) []byte {
	t := s.now().UnixMilli()
	if _, ok := body.(*wire.PathUpdate); ok {
		for {
			last := s.updClock.Load()
			t = max(t, last+1)
			if s.updClock.CompareAndSwap(last, t) {
				break
			}
		}
	}
	return wire.SealFrame(out, s.me, shared, wire.Message{Time: t, Body: body})
}

// sendControl sends a sealed control frame to pr: directly to addr, or
// through the relay when direct is false. It reports whether it went out.
func (s *Sock) sendControl(pr *peer, body wire.Body, direct bool, addr netip.AddrPort, ticket []byte) bool {
	return s.sendControlVia(pr, body, direct, addr, ticket, nil)
}

// sendControlVia is sendControl with the socket a direct frame goes from
// (nil: the main socket).
func (s *Sock) sendControlVia(pr *peer, body wire.Body, direct bool, addr netip.AddrPort, ticket []byte, via *extra) bool {
	bp := s.getBuf()
	defer s.putBuf(bp)
	if direct {
		if s.dropDirect(addr) {
			return false
		}
		return s.sendVia(s.sealTo((*bp)[:0], pr.shared, body), addr, via)
	}
	relay := s.relay.chosenAddr()
	if !relay.IsValid() || len(ticket) != crypto.TicketSize {
		return false
	}
	inner := s.sealTo(make([]byte, 0, 256), pr.shared, body)
	return s.send(wire.AppendRelaySend((*bp)[:0], ticket, s.myTag, inner), relay)
}

// sendProbe probes pr directly at addr, or through the relay. done, when
// set, is closed when the reply comes (Ping). It returns the transaction
// ID, 0 when nothing could be sent. pr.mu must not be held.
func (s *Sock) sendProbe(pr *peer, direct bool, addr netip.AddrPort, done chan struct{}) uint64 {
	return s.probe(pr, direct, addr, done, nil, true)
}

// probe is sendProbe. A direct probe goes from the candidate's socket when
// fromCand is set, else from via without touching the candidate's counts
// (birthday probes).
func (s *Sock) probe(pr *peer, direct bool, addr netip.AddrPort, done chan struct{}, via *extra, fromCand bool) uint64 {
	if direct && s.noDirect() {
		return 0
	}
	now := s.now()
	tx := newTxID()
	var ticket []byte
	pr.mu.Lock()
	if direct {
		c := pr.cands[addr]
		if c == nil && fromCand {
			pr.mu.Unlock()
			return 0 // not a candidate (refused, or evicted)
		}
		if c != nil && fromCand {
			if c.lastReply.IsZero() {
				// Unproven: the reflection limits decide.
				if !s.allowUnprovenLocked(pr, c, now) {
					c.lastSent = now
					pr.mu.Unlock()
					s.stats.Refused.Add(1)
					return 0
				}
				s.stats.Unproven.Add(1)
			}
			via = c.via
			c.probed(now)
		}
	} else {
		if len(pr.tickets) == 0 {
			pr.mu.Unlock()
			return 0
		}
		ticket = pr.tickets[0]
		pr.lastProbeR = now
		addr = s.relay.chosenAddr()
		if !addr.IsValid() {
			pr.mu.Unlock()
			return 0
		}
	}
	pr.mu.Unlock()
	s.pendMu.Lock()
	if (len(s.pending) >= maxPending && done == nil) || (!fromCand && len(s.pending) >= birthdayPending) {
		s.pendMu.Unlock()
		return 0
	}
	if !direct {
		via = nil
	}
	s.pending[tx] = &probeTx{peer: pr, direct: direct, addr: addr, via: via, sent: now, done: done}
	s.pendMu.Unlock()
	// A cut path (test hook) swallows the probe: liveness sees it unanswered.
	s.sendControlVia(pr, &wire.Probe{TxID: tx, Dest: addr}, direct, addr, ticket, via)
	return tx
}

func (s *Sock) forgetProbe(tx uint64) {
	s.pendMu.Lock()
	delete(s.pending, tx)
	s.pendMu.Unlock()
}

func (s *Sock) expirePending(now time.Time) {
	s.pendMu.Lock()
	defer s.pendMu.Unlock()
	for tx, p := range s.pending {
		if p.done == nil && now.Sub(p.sent) > nat.ProbeTimeout {
			delete(s.pending, tx)
		}
	}
}

// sealed handles a sealed frame from a peer, received directly or (direct
// false) through the relay with sender tag relayTag.
func (s *Sock) sealed(b []byte, from netip.AddrPort, direct bool, relayTag uint64, via *extra) {
	sl, err := wire.ParseSealed(b)
	if err != nil || sl.Sender == s.me {
		return
	}
	if !direct && sl.Sender.Tag() != relayTag {
		return
	}
	// Only peers the rendezvous introduced (or the application added) are
	// heard: a stranger's key costs no X25519 and earns no reply.
	pr := s.peerByID(sl.Sender)
	if pr == nil {
		return
	}
	shared := pr.shared
	m, err := sl.Open(shared)
	if err != nil {
		return
	}
	switch body := m.Body.(type) {
	case *wire.Probe:
		if !fresh(m.Time, s.now()) {
			s.stats.Stale.Add(1)
			return
		}
		s.onProbe(sl.Sender, shared, body, from, direct, via)
	case *wire.ProbeReply:
		s.onProbeReply(sl.Sender, body, direct, via)
	case *wire.PathUpdate:
		s.onPathUpdate(sl.Sender, m.Time, body, from, direct)
	}
}

// onProbe answers a probe on the path it came from. A direct probe from a
// known peer also makes its source address a candidate, probed soon.
func (s *Sock) onProbe(sender crypto.PeerID, shared *[32]byte, p *wire.Probe, from netip.AddrPort, direct bool, via *extra) {
	if direct && s.noDirect() {
		return
	}
	pr := s.peerByID(sender)
	if direct {
		if pr == nil {
			return
		}
		if !s.allowReply(pr, from, s.now()) {
			s.stats.RepliesLimited.Add(1)
			return
		}
		if via != nil {
			// Only the punch's winning socket answers (birthday.go).
			pr.mu.Lock()
			answer := pr.birthdayProbeLocked(via, from)
			pr.mu.Unlock()
			if !answer {
				return
			}
		}
		reply := &wire.ProbeReply{TxID: p.TxID, Observed: from}
		bp := s.getBuf()
		s.sendVia(s.sealTo((*bp)[:0], shared, reply), from, via)
		s.putBuf(bp)
		if via != nil {
			// A birthday hit: probe back from the same socket, so that
			// this side learns the path too.
			pr.lastSeen.Store(s.now().UnixNano())
			s.probe(pr, true, from, nil, via, false)
			return
		}
		now := s.now()
		prev, revive := pr.heard(now)
		// The peer's first frame ever: it knows us now, and its NAT lets
		// our probes through to where this came from (the ones sent
		// before were dropped): probe back at once.
		s.noticeSource(pr, from, now, prev.IsZero())
		if revive {
			s.resend(pr, prev)
		}
		return
	}
	if pr == nil {
		return // no ticket to answer through
	}
	prev, revive := pr.heard(s.now())
	pr.mu.Lock()
	var ticket []byte
	if len(pr.tickets) > 0 {
		ticket = pr.tickets[0]
	}
	pr.mu.Unlock()
	s.sendControl(pr, &wire.ProbeReply{TxID: p.TxID}, false, netip.AddrPort{}, ticket)
	if revive {
		s.resend(pr, prev)
	}
}

// onProbeReply completes a probe: it measures the path and, for a direct
// path, may make it the active one.
func (s *Sock) onProbeReply(sender crypto.PeerID, r *wire.ProbeReply, direct bool, via *extra) {
	now := s.now()
	s.pendMu.Lock()
	p := s.pending[r.TxID]
	if p == nil || p.peer.id != sender || p.direct != direct || p.via != via {
		s.pendMu.Unlock()
		return
	}
	rtt := max(now.Sub(p.sent), time.Microsecond)
	if p.done != nil {
		if !p.fired {
			p.fired, p.rtt = true, rtt
			close(p.done)
		}
	} else {
		delete(s.pending, r.TxID)
	}
	s.pendMu.Unlock()
	pr := p.peer
	if prevSeen, revive := pr.heard(now); revive {
		// Runs after the unlock below, on the route this reply chose.
		defer s.resend(pr, prevSeen)
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if !direct {
		pr.relayRTT = smooth(pr.relayRTT, rtt)
		return
	}
	if s.noDirect() {
		return
	}
	if via != nil && !pr.birthdayReplyLocked(via) {
		return
	}
	c := pr.cands[p.addr]
	if c == nil {
		if c = s.addCandLocked(pr, p.addr, true, false, now); c == nil {
			return
		}
	}
	pr.lastDirect.Store(now.UnixNano())
	switch pr.directReplyLocked(c, rtt, p.via, now) {
	case routeUp:
		s.log.Info("direct path up", "peer", pr.id.Short(), "remote", c.addr.String(), "rtt", c.rtt, "birthday", c.via != nil)
	case routeSwitched:
		s.log.Info("direct path switched", "peer", pr.id.Short(), "remote", c.addr.String(), "rtt", c.rtt)
	}
}

func smooth(old, sample time.Duration) time.Duration {
	if old == 0 {
		return sample
	}
	return (3*old + sample) / 4
}

// onPathUpdate applies a peer's new addresses and tickets and punches anew.
func (s *Sock) onPathUpdate(sender crypto.PeerID, t int64, u *wire.PathUpdate, from netip.AddrPort, direct bool) {
	pr := s.peerByID(sender)
	if pr == nil || u.Info.ID != sender {
		return
	}
	now := s.now()
	if prev, revive := pr.heard(now); revive {
		// After the unlock below, on the route the update chose (a
		// new relay ticket, say).
		defer s.resend(pr, prev)
	}
	announcing := s.announcing(now)
	pr.mu.Lock()
	if t <= pr.lastUpdate {
		pr.mu.Unlock()
		return // replayed or reordered
	}
	pr.lastUpdate = t
	// Published addresses the update no longer lists may be forgotten.
	for _, c := range pr.cands {
		c.learned = true
	}
	var oldTicket []byte
	if len(pr.tickets) > 0 {
		oldTicket = pr.tickets[0]
	}
	s.applyInfoLocked(pr, u.Info, false, now)
	answer := len(pr.tickets) > 0 && pr.answerUpdateLocked(now, !slices.Equal(oldTicket, pr.tickets[0]), announcing)
	if !s.noDirect() {
		s.newPunchLocked(pr, now, now)
	}
	was := pr.route.Load()
	s.fixRouteLocked(pr)
	is := pr.route.Load()
	strategy := nat.ChooseStrategy(s.cfg.NAT(), pr.nat)
	pr.mu.Unlock()
	if was.kind == PathRelay && is.kind == PathRelay && !slices.Equal(was.ticket, is.ticket) {
		// The peer moved (into a stream tunnel, out of one, a new NAT
		// mapping): what went to its old ticket was likely lost. The
		// last few packets go again to the new one, so that neither
		// side's QUIC waits out its probe timeout backoff (resend.go).
		s.resend(pr, time.Unix(0, 0))
	}
	if answer {
		// Our announcement went to the ticket this update replaced.
		s.announceTo(pr, s.Info(), now)
	}
	if !s.noDirect() && strategy != nat.StrategyRelayOnly {
		s.startBirthday(pr, strategy, now, false)
	}
	s.log.Debug("path update", "answered", answer, "peer", sender.Short(), "candidates", len(u.Info.Candidates), "tickets", len(u.Info.Tickets))
	if direct {
		s.noticeSource(pr, from, now, false)
	}
}

// tickPeers is the shell of the per-peer state machine (fsm.go): it runs
// every peer's tick and executes what it asks. A direct path lost is a sign
// that this peer's NAT may have forgotten its mappings (a router reboot, a
// conntrack flush): the relay ticket it published may point at a port that
// no longer leads here, so the layer reacts at once (pathLost) instead of
// waiting for the next rebind and registration. A relay path that carries
// data out and nothing back may be a relay gone: the chosen relay is bound
// again at once (relayPathLost).
func (s *Sock) tickPeers(now time.Time) {
	lost, relayLost := false, false
	myNAT := s.cfg.NAT()
	noDirect := s.noDirect()
	for _, pr := range s.peers() {
		env := tickEnv{
			noDirect:   noDirect,
			lastSent:   unixTime(pr.lastSent.Load()),
			lastSeen:   unixTime(pr.lastSeen.Load()),
			lastDirect: unixTime(pr.lastDirect.Load()),
		}
		pr.mu.Lock()
		st := nat.ChooseStrategy(myNAT, pr.nat)
		env.birthday = st == nat.StrategyBirthdayHard || st == nat.StrategyBirthdayEasy
		res := pr.tickLocked(now, env)
		pr.mu.Unlock()
		if res.closeKept != nil {
			s.log.Debug("closing birthday socket", "peer", pr.id.Short())
			s.dropExtra(res.closeKept)
		}
		if res.forget {
			s.log.Debug("forgetting idle peer", "peer", pr.id.Short())
			s.RemovePeer(pr.id)
			continue
		}
		if res.lost != nil {
			s.log.Info("direct path lost", "peer", pr.id.Short(), "remote", res.lost.addr.String(), "now", res.now.kind)
			lost = lost || res.now.kind != PathDirect
			// What went out on the dead path since the peer was last
			// heard from goes again on the new one.
			s.resend(pr, env.lastSeen)
		}
		if res.rebirth {
			s.startBirthday(pr, st, now, true)
		}
		for _, a := range res.probes {
			s.sendProbe(pr, true, a, nil)
		}
		if res.relayProbe {
			s.sendProbe(pr, false, netip.AddrPort{}, nil)
		}
		relayLost = relayLost || res.relayLost
	}
	if lost {
		s.pathLost(now)
	}
	if relayLost {
		s.relayPathLost(now)
	}
}

// lostReactEvery bounds pathLost's reaction to once per interval, however
// many paths fail at once or flap.
const lostReactEvery = time.Second

// pathLost reacts to a lost direct path as to a change of this peer's own
// addresses (localChanged): rebind every relay now, re-register, and send
// every peer a PathUpdate. When the relay then sees a new address (the NAT
// made a new mapping), the new ticket goes out in the next PathUpdates,
// so the peers' relay path leads here again within a round trip rather
// than at the next RelayRebindInterval.
func (s *Sock) pathLost(now time.Time) {
	last := s.lostAt.Load()
	if last != 0 && now.Sub(time.Unix(0, last)) < lostReactEvery {
		return
	}
	s.lostAt.Store(now.UnixNano())
	s.localChanged("direct path lost")
}

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
