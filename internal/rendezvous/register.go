package rendezvous

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/netip"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/wire"
)

// register indexes the sender at its source address and confirms with a
// Registered carrying that address, the refresh timing, the relays and
// fresh TURN credentials.
//
// The record keeps the Register's send time (discovery.Record.Sent), and
// the registry stores it only over a record with an earlier one: the
// instances share the cookie secret but each has its own replay cache, so
// a Register captured on the way to one instance and replayed, from the
// peer's address and within the clock window, to another (an attacker
// whose anycast route reaches it) would otherwise move the peer's home
// and address back, and with them its Punches, to where its NAT drops
// them. Such a Register is dropped and counted (register_not_newer). A
// peer that moved to another instance sends a newer Register, taken at
// once; a peer whose clock stepped back is refused until its clock passes
// the stored time, at most the clock window (Config.ClockSkew) later.
func (s *Server) register(ctx context.Context, sc *scratch, req *request, m *wire.Register) []outPacket {
	// The cookie was checked by handleFrame. Refreshes of peers this
	// instance knows do not count: only new peers grow the registry.
	if !req.known && !s.registerRate.Allow(req.from.Addr(), req.now.UnixNano()) {
		s.m.rejected[reasonRegisterRate].Inc()
		return s.errorReply(sc, req, wire.ErrCodeRateLimited, wire.MsgRegister, "too many registrations from this address")
	}
	if len(s.cfg.JoinToken) > 0 && subtle.ConstantTimeCompare(m.Token, s.cfg.JoinToken) != 1 {
		s.m.rejected[reasonBadToken].Inc()
		return s.errorReply(sc, req, wire.ErrCodeBadToken, wire.MsgRegister, "join token refused")
	}
	rec := discovery.Record{
		ID:         req.sender,
		Reflexive:  req.from,
		Candidates: usable(m.Candidates),
		Tickets:    m.Tickets,
		NAT:        m.NAT,
		Policy:     discovery.Policy{AllowAny: m.AllowAny, Allowed: m.Allowed},
		Instance:   s.cfg.Instance,
		Home:       s.cfg.MeshAddr,
		Updated:    req.now,
		Sent:       req.sent,
	}
	rctx, cancel := s.registryCtx(ctx)
	err := s.cfg.Registry.Put(rctx, rec, s.cfg.TTL)
	cancel()
	s.noteRegistry(err)
	if errors.Is(err, discovery.ErrNotNewer) {
		return s.reject(reasonRegisterNotNewer)
	}
	if err != nil {
		s.m.registryErrs.Inc()
		s.log.Debug("registry put failed", "peer", req.sender.Short(), "err", err)
		return s.errorReply(sc, req, wire.ErrCodeUnavailable, wire.MsgRegister, "registry unavailable")
	}
	s.m.registrations.Inc()
	s.recent.note(req.sender, req.from, &req.key)
	r := &sc.registered
	*r = wire.Registered{
		Reflexive:    req.from,
		TTL:          s.ttl,
		Refresh:      s.refresh,
		Relays:       s.cfg.Relays,
		StreamRelays: s.cfg.StreamRelays,
		TURNURIs:     s.cfg.TURNURIs,
		Instance:     s.cfg.Instance,
		Epoch:        s.epoch.Load(),
	}
	if len(s.cfg.TURNSecret) > 0 {
		// The full peer ID names the TURN user: the relay counts its
		// quota per name, and short IDs collide among many peers.
		r.TURNUser, r.TURNPass = crypto.TURNCredentials(s.cfg.TURNSecret, req.sender.String(), s.cfg.TURNTTL, req.now)
	}
	s.reply(sc, 0, req, req.from, &req.key, r)
	// Punches for this peer that its old home may have lost (held.go).
	for _, b := range s.held.take(req.sender, req.now) {
		sc.replies = append(sc.replies, outPacket{to: req.from, b: b})
	}
	return sc.replies
}

// usable drops candidates no peer could send to (in place).
func usable(cands []netip.AddrPort) []netip.AddrPort {
	out := cands[:0]
	for _, c := range cands {
		a := c.Addr()
		if !c.IsValid() || c.Port() == 0 || a.IsUnspecified() || a.IsMulticast() {
			continue
		}
		out = append(out, c)
	}
	return out
}
