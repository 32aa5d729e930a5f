package rendezvous

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"net/netip"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/wire"
)

// connect introduces the sender (A) to its target (B): B gets a Punch with
// A's addresses at its registered reflexive address (unless B is over its
// Punch rate), A a ConnectReply with B's, both with the same start time. A target that is not registered and
// one whose policy refuses A get the same ConnectReply{Found: false}.
func (s *Server) connect(ctx context.Context, sc *scratch, req *request, m *wire.Connect) []outPacket {
	// The cookie was checked by handleFrame.
	self, target, err, terr := s.lookupBoth(ctx, req.sender, m)
	switch {
	case errors.Is(err, discovery.ErrNotFound):
		return s.errorReply(sc, req, wire.ErrCodeNotRegistered, wire.MsgConnect, "register first")
	case err != nil:
		return s.registryError(sc, req, err)
	}
	err = terr
	switch {
	case errors.Is(err, discovery.ErrNotFound):
		return s.notFound(sc, req, m.TxID)
	case err != nil:
		return s.registryError(sc, req, err)
	}
	if !target.Policy.Admits(req.sender) {
		return s.notFound(sc, req, m.TxID)
	}
	tkey, err := s.keyFor(target.ID)
	if err != nil { // a registered key always works; be safe anyway
		return s.notFound(sc, req, m.TxID)
	}
	s.m.connectsFound.Inc()
	start := req.now.Add(s.cfg.PunchDelay).UnixMilli()
	p := &sc.punch
	*p = wire.Punch{TxID: m.TxID, Start: start, Epoch: s.epoch.Load(), Peer: wire.PeerInfo{
		ID:         req.sender,
		Reflexive:  req.from, // fresher than the record's, should A have moved
		Candidates: self.Candidates,
		Tickets:    self.Tickets,
		NAT:        self.NAT,
	}}
	if s.allowPunch(target.ID, req.now.UnixNano()) {
		s.reply(sc, 0, req, target.Reflexive, &tkey, p)
		if s.elsewhere(&target) {
			// The home may have died with this Punch (held.go).
			s.held.hold(target.ID, sc.replies[0].b, req.now)
		}
		if s.viaHome(&target, sc.replies[0].b) {
			sc.replies = sc.replies[:0]
		}
		s.m.punches.Inc()
	} else {
		s.m.punchLimited.Inc()
	}
	r := &sc.reply
	*r = wire.ConnectReply{TxID: m.TxID, Found: true, Start: start, Epoch: s.epoch.Load(), Peer: wire.PeerInfo{
		ID:         target.ID,
		Reflexive:  target.Reflexive,
		Candidates: target.Candidates,
		Tickets:    target.Tickets,
		NAT:        target.NAT,
	}}
	s.reply(sc, 1, req, req.from, &req.key, r)
	return sc.replies
}

// allowPunch takes one token from target's Punch budget. The rate
// limiter is keyed by address, so the key is hashed (with a per-process
// seed, the key being the peer's choice) into an IPv6 /64 of its own.
func (s *Server) allowPunch(target crypto.PeerID, now int64) bool {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], maphash.Bytes(s.punchSeed, target[:]))
	b[0] = 0x20 // a global unicast prefix: never IPv4-mapped
	return s.punchRate.Allow(netip.AddrFrom16(b), now)
}

// lookupBoth looks up a Connect's sender and its target. With a registry
// across the network the two lookups run at once, so a connect waits for
// one round trip, not two in a row.
func (s *Server) lookupBoth(ctx context.Context, sender crypto.PeerID, m *wire.Connect) (self, target discovery.Record, err, terr error) {
	getSelf := func() {
		s.m.lookups.Inc()
		rctx, cancel := s.registryCtx(ctx)
		self, err = s.cfg.Registry.Get(rctx, sender)
		cancel()
		s.noteRegistry(err)
	}
	if s.inProcess {
		getSelf()
		if err != nil {
			return self, target, err, terr
		}
		target, terr = s.lookup(ctx, m)
		return self, target, err, terr
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		getSelf()
	}()
	target, terr = s.lookup(ctx, m)
	<-done
	return self, target, err, terr
}

// lookup finds the Connect's target by peer ID, else by overlay address.
func (s *Server) lookup(ctx context.Context, m *wire.Connect) (discovery.Record, error) {
	s.m.lookups.Inc()
	var (
		rec discovery.Record
		err = discovery.ErrNotFound
	)
	rctx, cancel := s.registryCtx(ctx)
	defer cancel()
	switch {
	case !m.Target.IsZero():
		rec, err = s.cfg.Registry.Get(rctx, m.Target)
	case m.TargetAddr.IsValid() && crypto.IsOverlay(m.TargetAddr):
		rec, err = s.cfg.Registry.GetByAddr(rctx, m.TargetAddr)
	}
	s.noteRegistry(err)
	return rec, err
}

func (s *Server) notFound(sc *scratch, req *request, txID uint64) []outPacket {
	s.m.connectsNone.Inc()
	r := &sc.reply
	*r = wire.ConnectReply{TxID: txID, Epoch: s.epoch.Load()}
	s.reply(sc, 0, req, req.from, &req.key, r)
	return sc.replies
}

func (s *Server) registryError(sc *scratch, req *request, err error) []outPacket {
	s.m.registryErrs.Inc()
	s.log.Debug("registry lookup failed", "peer", req.sender.Short(), "err", err)
	return s.errorReply(sc, req, wire.ErrCodeUnavailable, wire.MsgConnect, "registry unavailable")
}

// keyFor returns the box key shared with a registered peer, computing and
// caching it when this instance has not met the peer yet. The computation
// draws on the global key-miss budget: connects to many targets registered
// through other instances cost an X25519 each.
func (s *Server) keyFor(id crypto.PeerID) ([32]byte, error) {
	if k, ok := s.keys.Get(&id); ok {
		return k, nil
	}
	if !s.keyMissBudget.Allow(s.cfg.Now().UnixNano()) {
		s.m.rejected[reasonKeyBudget].Inc()
		return [32]byte{}, errKeyBudget
	}
	s.m.keyComputes.Inc()
	k, err := s.cfg.Identity.SharedKey(id)
	if err != nil {
		return [32]byte{}, err
	}
	s.keys.Put(&id, k)
	return *k, nil
}
