package rzclient

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/keymesh/keymesh/internal/replay"
	"github.com/keymesh/keymesh/internal/wire"
)

// HandleFrame takes a datagram the path layer received. It returns false
// when the frame is neither a sealed frame from the pinned server key nor a
// CookieReply from the server's address (the caller then handles it
// elsewhere), true when it consumed it, whether or not it was valid: a
// frame claiming the server's key that does not open, is stale or replayed
// is dropped here, and so is a CookieReply that answers none of our recent
// requests.
func (c *Client) HandleFrame(b []byte, from netip.AddrPort) bool {
	if len(b) > 0 && b[0] == wire.TypeCookieReply {
		if netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) != c.cfg.Server {
			return false
		}
		c.onCookieReply(b)
		return true
	}
	s, err := wire.ParseSealed(b)
	if err != nil || s.Sender != c.cfg.ServerKey {
		return false
	}
	m, err := s.Open(&c.shared)
	if err != nil {
		c.log.Debug("dropped rendezvous frame", "from", from, "err", err)
		return true
	}
	now := c.cfg.Now()
	if d := now.Sub(time.UnixMilli(m.Time)); d > c.cfg.ClockSkew || d < -c.cfg.ClockSkew {
		// Authentic but outside the window: a replay, or one of the two
		// clocks is wrong (the server then drops our messages too).
		c.setError(fmt.Errorf("dropped a rendezvous message stamped %v away from our clock: check the system clock (NTP)", d.Round(time.Second)))
		return true
	}
	if err := c.seen.Check(now, s.Sender[:], s.Nonce[:]); err != nil {
		if !errors.Is(err, replay.ErrReplay) {
			c.log.Warn("dropped rendezvous frame", "err", err)
		}
		return true
	}
	if c.cfg.OnAnswer != nil {
		c.cfg.OnAnswer()
	}
	switch body := m.Body.(type) {
	case *wire.Registered:
		c.noteEpoch(body.Epoch, true)
		c.onRegistered(body)
	case *wire.Challenge:
		c.mu.Lock()
		c.cookie = body.Cookie
		c.mu.Unlock()
		switch body.For {
		case wire.MsgRegister:
			c.onRegisterChallenge()
		case wire.MsgConnect:
			c.onConnectChallenge()
		case wire.MsgReport:
			c.onReportChallenge()
		case wire.MsgKeepalive:
			c.onKeepaliveChallenge()
		}
	case *wire.KeepaliveAck:
		c.onKeepaliveAck(body)
	case *wire.ConnectReply:
		c.noteEpoch(body.Epoch, false)
		c.onConnectReply(body)
	case *wire.Punch:
		c.noteEpoch(body.Epoch, false)
		c.onPunch(body)
	case *wire.Error:
		c.noteEpoch(body.Epoch, false)
		c.onError(body)
	default:
		c.log.Debug("unexpected message from rendezvous", "type", m.Body.Type())
	}
	return true
}

// onCookieReply takes the cookie the server sent, unsealed, instead of
// opening a request of ours from an unknown key while it was under load,
// and asks again at once (once per round) with its proof. The reply must
// echo the salt of one of our recent requests, which an off-path forger
// cannot know; each salt is good for one reply.
func (c *Client) onCookieReply(b []byte) {
	cookie, salt, err := wire.ParseCookieReply(b)
	if err != nil {
		c.log.Debug("dropped cookie reply", "err", err)
		return
	}
	c.mu.Lock()
	var t wire.MsgType
	for i := range c.salts {
		if s := &c.salts[i]; s.t != 0 && s.salt == salt {
			t = s.t
			*s = sentSalt{}
			break
		}
	}
	if t != 0 {
		c.cookie = cookie
		c.cookieHeard = true
	}
	c.mu.Unlock()
	switch t {
	case wire.MsgRegister:
		c.onRegisterChallenge()
	case wire.MsgConnect:
		c.onConnectChallenge()
	case wire.MsgReport:
		c.onReportChallenge()
	case wire.MsgKeepalive:
		c.onKeepaliveChallenge()
	default:
		c.log.Debug("dropped a cookie reply that answers none of our requests")
	}
}

func (c *Client) onPunch(p *wire.Punch) {
	if !c.cfg.AllowAny && !slices.Contains(c.cfg.Allowed, p.Peer.ID) {
		c.log.Warn("dropped a punch from a peer our policy refuses", "peer", p.Peer.ID.Short())
		return
	}
	if c.cfg.OnPunch != nil {
		c.cfg.OnPunch(*p)
	}
}

func (c *Client) onError(e *wire.Error) {
	var err error
	switch e.Code {
	case wire.ErrCodeNotRegistered:
		// Our registration expired there (or that instance lost it):
		// register again; waiting connects retransmit meanwhile.
		err = fmt.Errorf("rendezvous says we are not registered")
		c.Reregister()
	case wire.ErrCodeBadToken:
		err = ErrBadToken
		if e.For == wire.MsgConnect {
			c.failPending(err)
		}
	case wire.ErrCodeUnavailable:
		err = ErrUnavailable
	default:
		err = fmt.Errorf("rendezvous error %d for %s: %q", e.Code, e.For, e.Text)
	}
	c.setError(err)
}
