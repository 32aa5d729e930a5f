package rzclient

import (
	"context"
	"time"

	"github.com/keymesh/keymesh/internal/wire"
)

// Keepalives between registrations (Config.Keepalive). A peer that only
// registers every Refresh learns of a rendezvous that lost it (an instance
// killed behind a front door that moved its flow elsewhere, a registry
// that came back empty) only at the next refresh, and until then no one
// can connect to it. So between registrations it sends a Keepalive every
// Config.Keepalive: a sealed request the server answers with a
// KeepaliveAck naming the instance and its registry epoch, without
// touching its registry. It registers again at once when the answer comes
// from another instance than its registration's, when the epoch changed
// (noteEpoch), or when keepaliveMisses keepalives in a row went
// unanswered (only once the server has answered one: an older server drops
// them).
//
// Cost: per peer one request (139 bytes of UDP payload) and one smaller answer
// each interval, one box opened and one sealed at the server, no registry
// call. Only sealed answers under the pinned server key count, so a
// stranger cannot make the peer register; and each trigger registers at
// most once per epochKickGap.

// DefaultKeepalive is the interval the peer command uses by default.
const DefaultKeepalive = time.Second

// keepaliveMisses is how many keepalives in a row may go unanswered before
// the peer registers again (its Register round then retransmits with
// backoff, and finds the server's new instance or its return).
const keepaliveMisses = 2

// idle waits between two registrations and reports whether to register
// again (false: ctx ended): after refresh, at once after Reregister, or
// when keepalives went unanswered. A keepalive that goes unanswered within
// the first retransmission timeout (Config.Retransmit) is repeated then,
// not a whole interval later.
func (c *Client) idle(ctx context.Context, refresh time.Duration) bool {
	next := c.after(refresh)
	// wait waits d: 1 when it passed, 0 to register again, -1 when ctx
	// ended, 2 when ack fired (nil: never).
	wait := func(d time.Duration, ack <-chan struct{}) int {
		select {
		case <-ctx.Done():
			return -1
		case <-c.kick:
			return 0
		case <-next:
			return 0
		case <-ack:
			return 2
		case <-c.after(d):
			return 1
		}
	}
	if c.cfg.Keepalive <= 0 {
		select {
		case <-ctx.Done():
			return false
		case <-c.kick:
		case <-next:
		}
		return true
	}
	for {
		if w := wait(c.cfg.Keepalive, nil); w <= 0 {
			return w == 0
		}
		c.mu.Lock()
		c.kaAnswered = false
		c.mu.Unlock()
		select {
		case <-c.kaAck: // an answer to an earlier round
		default:
		}
		// Send, and while unanswered, again after a retransmission
		// timeout (not a whole interval, so that a front door that moved
		// our flow is noticed at once), up to keepaliveMisses. The next
		// interval starts at the answer, not at the end of that timeout:
		// keepalives go out every Keepalive plus a round trip, and a
		// peer whose home died notices within about Keepalive.
		for sent := 0; ; {
			if err := c.sendKeepalive(); err != nil {
				c.setError(err)
			}
			sent++
			w := wait(c.retransmitAfter(0), c.kaAck)
			if w <= 0 {
				return w == 0
			}
			if w == 2 {
				break
			}
			c.mu.Lock()
			answered := c.kaAnswered
			c.mu.Unlock()
			if answered {
				break
			}
			if sent >= keepaliveMisses {
				c.mu.Lock()
				heard := c.kaHeard
				c.mu.Unlock()
				if !heard {
					// A server from before keepalives drops them:
					// its silence means nothing.
					break
				}
				c.log.Info("rendezvous keepalives unanswered: registering again", "missed", sent)
				return true
			}
		}
	}
}

func (c *Client) sendKeepalive() error {
	c.mu.Lock()
	m := &wire.Keepalive{Cookie: c.cookie}
	c.mu.Unlock()
	return c.send(m)
}

// onKeepaliveAck takes the server's answer: it clears the misses, and
// when another instance than the one we registered with answered, we
// register again (at most once per epochKickGap), so that this instance
// becomes our home in the registry.
func (c *Client) onKeepaliveAck(a *wire.KeepaliveAck) {
	c.noteEpoch(a.Epoch, false)
	now := c.cfg.Now()
	c.mu.Lock()
	c.kaAnswered = true
	c.kaHeard = true
	select {
	case c.kaAck <- struct{}{}:
	default:
	}
	was := c.st.Instance
	moved := was != "" && wire.AckInstance(was) != a.Instance
	kick := moved && now.Sub(c.instKicked) >= epochKickGap
	if kick {
		c.instKicked = now
	}
	c.mu.Unlock()
	if kick {
		c.log.Info("another rendezvous instance answers: registering again", "was", was, "now", a.Instance)
		c.Reregister()
	}
}

// onKeepaliveChallenge resends the keepalive with the new cookie.
func (c *Client) onKeepaliveChallenge() {
	if err := c.sendKeepalive(); err != nil {
		c.setError(err)
	}
}

// Ping sends one Keepalive now, outside Run's schedule: a client that never
// runs Run (the node's UDP probe, on a socket of its own) uses it to learn
// whether the server answers there. The answer, a KeepaliveAck (or a
// Challenge, after which the client sends again with the new cookie),
// arrives through HandleFrame and calls Config.OnAnswer.
func (c *Client) Ping() error {
	return c.sendKeepalive()
}
