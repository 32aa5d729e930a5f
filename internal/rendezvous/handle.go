package rendezvous

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/replay"
	"github.com/keymesh/keymesh/internal/wire"
)

// msgHeaderLen is a message plaintext's type and clock.
const msgHeaderLen = 1 + 8

// handle is the whole protocol step: one datagram in, the datagrams to send
// out. The replies alias sc and are valid until sc is used again.
func (s *Server) handle(ctx context.Context, sc *scratch, from netip.AddrPort, pkt []byte) []outPacket {
	sc.replies = sc.replies[:0]
	now := s.cfg.Now()
	s.m.packets.Inc()
	if !s.limiter.Allow(from.Addr(), now.UnixNano()) {
		return s.reject(reasonRateLimited)
	}
	switch {
	case len(pkt) == 0:
		return s.reject(reasonTruncated)
	case pkt[0] < 4: // STUN's first-byte range (RFC 7983)
		return s.handleSTUN(sc, from, pkt)
	case pkt[0] >= 0x20 && pkt[0] <= 0x2f:
		return s.handleFrame(ctx, sc, from, pkt, now)
	}
	return s.reject(reasonMalformed)
}

func (s *Server) reject(r reason) []outPacket {
	s.m.rejected[r].Inc()
	return nil
}

// request is an authenticated, fresh message from a peer.
type request struct {
	from   netip.AddrPort
	sender crypto.PeerID
	key    [32]byte // shared with sender
	now    time.Time
	size   int // of the datagram, for the amplification bound
	// known: the sender's key was in the key cache (it proved an address
	// here before), so a Register is most likely a refresh.
	known bool
}

func (s *Server) handleFrame(ctx context.Context, sc *scratch, from netip.AddrPort, pkt []byte, now time.Time) []outPacket {
	t, err := wire.Header(pkt)
	switch {
	case errors.Is(err, wire.ErrShort):
		return s.reject(reasonTruncated)
	case errors.Is(err, wire.ErrVersion):
		return s.reject(reasonBadVersion)
	case err != nil:
		return s.reject(reasonMalformed)
	case t != wire.TypeSealed:
		return s.reject(reasonUnknownType)
	}
	sealed, err := wire.ParseSealed(pkt)
	if err != nil {
		return s.reject(reasonTruncated)
	}
	// The cookie is inside the box, so a stranger's first frame costs one
	// X25519 before anything proves its address: strangers' X25519s are
	// budgeted per source and in all (known keys are cached and free).
	key, cached := s.keys.get(&sealed.Sender)
	computed := false
	if !cached {
		var ok bool
		if key, ok = s.probation.get(&sealed.Sender); !ok {
			if r, ok := s.admitKeyMiss(from.Addr(), now); !ok {
				return s.reject(r)
			}
			k, err := s.cfg.Identity.SharedKey(sealed.Sender)
			s.m.keyComputes.Inc()
			if err != nil {
				return s.reject(reasonBadBox)
			}
			key, computed = *k, true
		}
	}
	plain, err := crypto.OpenBox(sc.plain[:0], sealed.Box, &sealed.Nonce, &key)
	if err != nil {
		return s.reject(reasonBadBox)
	}
	if computed {
		// A new peer's first frame has no cookie yet; keeping its key a
		// little while saves a second X25519 for the frame that answers
		// the Challenge. This cache holds about one second of the budget,
		// so a flood only rotates it.
		s.probation.put(&sealed.Sender, &key)
	}
	if len(plain) < msgHeaderLen {
		return s.reject(reasonMalformed)
	}
	mt := wire.MsgType(plain[0])
	if mt != wire.MsgRegister && mt != wire.MsgConnect {
		return s.reject(reasonUnknownType)
	}
	sent := time.UnixMilli(int64(binary.BigEndian.Uint64(plain[1:msgHeaderLen])))
	if d := now.Sub(sent); d > s.cfg.MaxSkew || d < -s.cfg.MaxSkew {
		return s.reject(reasonStaleTime)
	}
	msg, err := wire.ParseMessage(plain)
	if err != nil {
		return s.reject(reasonMalformed)
	}
	req := request{from: from, sender: sealed.Sender, key: key, now: now, size: len(pkt), known: cached}
	// Cheap and stateless before anything stateful: a frame without a
	// valid cookie for its source gets a Challenge (smaller than it) and
	// leaves nothing behind, neither in the key cache nor in the replay
	// cache, so spoofed sources cannot fill either.
	var cookie *crypto.Cookie
	switch b := msg.Body.(type) {
	case *wire.Register:
		cookie = &b.Cookie
	case *wire.Connect:
		cookie = &b.Cookie
	default:
		return s.reject(reasonUnknownType)
	}
	if !s.cfg.Cookies.Check(from, *cookie) {
		return s.challenge(sc, &req, mt)
	}
	s.proven.mark(from.Addr(), now.UnixNano())
	if !cached {
		// Only a key that opened a box from a proven address earns a place.
		s.keys.put(&sealed.Sender, &key)
	}
	switch err := s.replay.CheckStamped(now, sent, sealed.Sender[:], sealed.Nonce[:]); {
	case errors.Is(err, replay.ErrStale):
		return s.reject(reasonStaleTime)
	case err != nil:
		return s.reject(reasonReplay)
	}
	switch b := msg.Body.(type) {
	case *wire.Register:
		return s.register(ctx, sc, &req, b)
	case *wire.Connect:
		return s.connect(ctx, sc, &req, b)
	}
	return s.reject(reasonUnknownType)
}

// admitKeyMiss decides whether a sender whose key is not cached may cost an
// X25519: its source's budget first, then a global one, which only bites
// when misses arrive faster than it refills (a flood of fresh keys).
// Sources that proved their address recently have a global budget of their
// own, so new peers behind a known address get in during such a flood.
func (s *Server) admitKeyMiss(src netip.Addr, now time.Time) (reason, bool) {
	t := now.UnixNano()
	if !s.keyMissSource.Allow(src, t) {
		return reasonKeyRate, false
	}
	budget := s.keyMissBudget
	if s.proven.has(src, t) {
		budget = s.provenBudget
	}
	if !budget.Allow(t) {
		return reasonKeyBudget, false
	}
	return 0, true
}

// reply seals body to the request's sender into scratch buffer i and queues
// it for to.
func (s *Server) reply(sc *scratch, i int, req *request, to netip.AddrPort, key *[32]byte, body wire.Body) {
	sc.msg = wire.AppendMessage(sc.msg[:0], wire.Message{Time: req.now.UnixMilli(), Body: body})
	sc.bufs[i] = wire.SealPlain(sc.bufs[i][:0], s.id, key, sc.msg)
	sc.replies = append(sc.replies, outPacket{to: to, b: sc.bufs[i]})
}

// challenge answers a request without a valid cookie: a fresh cookie for
// its source address, in a reply smaller than any request that carries one.
func (s *Server) challenge(sc *scratch, req *request, t wire.MsgType) []outPacket {
	s.m.rejected[reasonNoCookie].Inc()
	c := &sc.challenge
	*c = wire.Challenge{Cookie: s.cfg.Cookies.Make(req.from), For: t}
	s.reply(sc, 0, req, req.from, &req.key, c)
	if len(sc.bufs[0]) > req.size { // cannot happen (see wire); never amplify
		sc.replies = sc.replies[:0]
		return nil
	}
	return sc.replies
}

// errorReply answers with an Error (only after the cookie was checked).
func (s *Server) errorReply(sc *scratch, req *request, code byte, t wire.MsgType, text string) []outPacket {
	s.reply(sc, 0, req, req.from, &req.key, &wire.Error{Code: code, For: t, Text: text})
	return sc.replies
}
