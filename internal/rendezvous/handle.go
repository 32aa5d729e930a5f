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
//
// No per-source budget is spent before the datagram proved its source:
// anyone can send from a peer's address, so a budget shared by everything
// that claims an address is one a stranger can spend for the peer (50
// datagrams a second would silence it). A Request pays RateLimit once its
// nonce proved the cookie of its source (a hash or two, handleFrame), or
// RateLimit's other bucket for its CookieReply; STUN pays STUNRate.
func (s *Server) handle(ctx context.Context, sc *scratch, from netip.AddrPort, pkt []byte) []outPacket {
	sc.replies = sc.replies[:0]
	now := s.cfg.Now()
	s.m.packets.Inc()
	switch {
	case len(pkt) == 0:
		return s.reject(reasonTruncated)
	case pkt[0] < 4: // STUN's first-byte range (RFC 7983)
		return s.handleSTUN(sc, from, pkt)
	case wire.IsFrameType(pkt[0]):
		return s.handleFrame(ctx, sc, from, pkt, now)
	}
	return s.reject(reasonMalformed)
}

// allowProven takes a token of RateLimit for a request that proved the
// cookie of from. Behind a stream relay's presence address each port is
// one tunnel, one peer, and the proof shows the request came through it:
// the tunnel pays alone, so that other tunnels (anyone may open some)
// cannot spend the budget of a peer that moved into its tunnel. The relay
// bounds its tunnels and what each sends to the servers.
func (s *Server) allowProven(from netip.AddrPort, now int64) bool {
	if len(s.cfg.StreamRelaySources) > 0 {
		a := from.Addr().Unmap()
		for _, p := range s.cfg.StreamRelaySources {
			if p.Contains(a) {
				return s.tunnels.AllowAddrPort(from, now)
			}
		}
	}
	return s.limiter.Allow(from.Addr(), now)
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
	sent   time.Time // the sender's clock, in the message (milliseconds)
	size   int       // of the datagram, for the amplification bound
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
	case t != wire.TypeRequest: // since protocol version 3, requests are Request frames
		return s.reject(reasonUnknownType)
	}
	sealed, err := wire.ParseRequest(pkt)
	if err != nil {
		return s.reject(reasonTruncated)
	}
	// The cookie first, outside the box (WireGuard's mac2): a Request whose
	// nonce does not prove its source's cookie (a hash or two) gets the
	// cookie in an unsealed CookieReply, smaller than it, and costs neither
	// an X25519 nor opening a box, and leaves nothing behind.
	fresh, proved := s.proofValid(&sealed, from)
	if !proved {
		if !s.unproven.Allow(from.Addr(), now.UnixNano()) {
			return s.reject(reasonRateLimited)
		}
		return s.cookieReply(sc, &sealed, from, &fresh, len(pkt))
	}
	if !s.allowProven(from, now.UnixNano()) {
		return s.reject(reasonRateLimited)
	}
	// A proven source's sender key: cached for peers seen before, else one
	// X25519 from the source's budget (a new peer, or a peer that made a new
	// key, behind that address).
	key, cached := s.keys.Get(&sealed.Sender)
	if !cached {
		if !s.keyMissSource.Allow(from.Addr(), now.UnixNano()) {
			return s.reject(reasonKeyRate)
		}
		k, err := s.cfg.Identity.SharedKey(sealed.Sender)
		s.m.keyComputes.Inc()
		if err != nil {
			return s.reject(reasonBadBox)
		}
		key = *k
	}
	plain, err := crypto.OpenBox(sc.plain[:0], sealed.Box, &sealed.Nonce, &key)
	if err != nil {
		return s.reject(reasonBadBox)
	}
	if len(plain) < msgHeaderLen {
		return s.reject(reasonMalformed)
	}
	mt := wire.MsgType(plain[0])
	if mt != wire.MsgRegister && mt != wire.MsgConnect && mt != wire.MsgReport && mt != wire.MsgKeepalive {
		return s.reject(reasonUnknownType)
	}
	sent := time.UnixMilli(int64(binary.BigEndian.Uint64(plain[1:msgHeaderLen])))
	if d := now.Sub(sent); d > s.cfg.ClockSkew || d < -s.cfg.ClockSkew {
		return s.reject(reasonStaleTime)
	}
	msg, err := wire.ParseMessage(plain)
	if err != nil {
		return s.reject(reasonMalformed)
	}
	req := request{from: from, sender: sealed.Sender, key: key, now: now, sent: sent, size: len(pkt), known: cached}
	// The cookie inside the box must be valid too (a client puts the same
	// cookie in both); one that is not gets a sealed Challenge (smaller
	// than the request) and leaves nothing behind, neither in the key
	// cache nor in the replay cache.
	var cookie *crypto.Cookie
	switch b := msg.Body.(type) {
	case *wire.Register:
		cookie = &b.Cookie
	case *wire.Connect:
		cookie = &b.Cookie
	case *wire.Report:
		cookie = &b.Cookie
	case *wire.Keepalive:
		cookie = &b.Cookie
	default:
		return s.reject(reasonUnknownType)
	}
	if !s.cfg.Cookies.Check(from, *cookie) {
		return s.challenge(sc, &req, mt)
	}
	// A Keepalive or Register still carrying the previous period's cookie
	// gets this period's in a Challenge (the client sends it again with
	// it): an active peer so renews its cookie through requests that
	// proved their source, and never needs a CookieReply, whose budget
	// a flood spoofed from its address can spend. Connects and Reports are
	// served with it, the keepalives renew it within a second.
	if *cookie != fresh && (mt == wire.MsgKeepalive || mt == wire.MsgRegister) {
		return s.challenge(sc, &req, mt)
	}
	if !cached {
		// Only a key that opened a box from a proven address earns a place.
		s.keys.Put(&sealed.Sender, &key)
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
	case *wire.Report:
		return s.report(sc, &req, b)
	case *wire.Keepalive:
		return s.keepalive(sc, &req)
	}
	return s.reject(reasonUnknownType)
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

// proofValid reports whether a Request's nonce proves the cookie of its
// source, this period's or the one before's; it returns this period's,
// for a CookieReply.
func (s *Server) proofValid(sealed *wire.Sealed, from netip.AddrPort) (crypto.Cookie, bool) {
	cur := s.cfg.Cookies.Make(from)
	if sealed.ProofValid(&cur) {
		return cur, true
	}
	prev := s.cfg.Cookies.Previous(from)
	return cur, sealed.ProofValid(&prev)
}

// cookieReply answers a Request that did not prove its source's cookie:
// the cookie, unsealed (no X25519, no box), in a reply smaller than the
// request, bound to it by the echo of its salt.
func (s *Server) cookieReply(sc *scratch, sealed *wire.Sealed, from netip.AddrPort, cookie *crypto.Cookie, size int) []outPacket {
	s.m.rejected[reasonNoCookie].Inc()
	if wire.CookieReplyLen > size { // cannot happen (see wire); never amplify
		return nil
	}
	s.m.cookieReplies.Inc()
	sc.bufs[0] = wire.AppendCookieReply(sc.bufs[0][:0], *cookie, sealed.Salt())
	sc.replies = append(sc.replies, outPacket{to: from, b: sc.bufs[0]})
	return sc.replies
}

// errorReply answers with an Error (only after the cookie was checked).
func (s *Server) errorReply(sc *scratch, req *request, code byte, t wire.MsgType, text string) []outPacket {
	s.reply(sc, 0, req, req.from, &req.key, &wire.Error{Code: code, For: t, Text: text, Epoch: s.epoch.Load()})
	return sc.replies
}

// keepalive answers a Keepalive with this instance's name and the registry
// epoch, touching no registry: a sealed answer no larger than the request
// (wire.KeepalivePad), to an address that proved its cookie.
func (s *Server) keepalive(sc *scratch, req *request) []outPacket {
	s.m.keepalives.Inc()
	a := &sc.ack
	*a = wire.KeepaliveAck{Instance: s.cfg.Instance, Epoch: s.epoch.Load()}
	s.reply(sc, 0, req, req.from, &req.key, a)
	if len(sc.bufs[0]) > req.size { // cannot happen (see wire); never amplify
		sc.replies = sc.replies[:0]
		return nil
	}
	return sc.replies
}
