package rzclient

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// Connect asks the server to introduce us to target, a peer ID or an
// overlay IPv6 address (text). On success the target has been sent a Punch
// with our addresses, and the reply carries its addresses and the moment
// both sides start punching. A target that is not registered, or does not
// admit us, gives ErrPeerNotFound. Connect retransmits with backoff and
// gives up with ErrNoAnswer after Config.ConnectTries sends (with the
// defaults: retransmissions after about 250 ms, 250 ms, then doubling;
// give-up after about 24 s: connectAfter).
func (c *Client) Connect(ctx context.Context, target string) (wire.ConnectReply, error) {
	t, err := parseTarget(target)
	if err != nil {
		return wire.ConnectReply{}, err
	}
	return c.connect(ctx, t)
}

// ConnectPeer is Connect for a parsed peer ID.
func (c *Client) ConnectPeer(ctx context.Context, id crypto.PeerID) (wire.ConnectReply, error) {
	return c.connect(ctx, target{id: id})
}

// ConnectAddr is Connect for a parsed overlay address.
func (c *Client) ConnectAddr(ctx context.Context, addr netip.Addr) (wire.ConnectReply, error) {
	if !crypto.IsOverlay(addr.Unmap()) {
		return wire.ConnectReply{}, fmt.Errorf("%s: %w", addr, ErrBadTarget)
	}
	return c.connect(ctx, target{addr: addr.Unmap()})
}

func (c *Client) connect(ctx context.Context, t target) (wire.ConnectReply, error) {
	p := &pending{
		msg:   wire.Connect{TxID: randomTxID(), Target: t.id, TargetAddr: t.addr},
		done:  make(chan result, 1),
		again: make(chan struct{}, 1),
	}
	c.mu.Lock()
	c.pending[p.msg.TxID] = p
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, p.msg.TxID)
		c.mu.Unlock()
	}()
	for tries := 0; ; tries++ {
		if tries == c.cfg.ConnectTries {
			err := fmt.Errorf("connect %s: %w %s after %d tries", t, ErrNoAnswer, c.cfg.Server, tries)
			if last := c.Status().LastError; last != "" {
				err = fmt.Errorf("%w (last error: %s)", err, last)
			}
			return wire.ConnectReply{}, err
		}
		c.mu.Lock()
		p.retried = false
		c.mu.Unlock()
		if err := c.sendConnect(p); err != nil {
			c.setError(err)
		}
		wait := c.after(c.connectAfter(tries))
		select {
		case <-ctx.Done():
			return wire.ConnectReply{}, fmt.Errorf("connect %s: %w", t, ctx.Err())
		case r := <-p.done:
			if r.err != nil {
				return wire.ConnectReply{}, fmt.Errorf("connect %s: %w", t, r.err)
			}
			return r.reply, nil
		case <-wait:
		case <-p.again: // we registered (again): send now, not after the backoff
		}
	}
}

// connectAfter is the wait after a Connect's send number try (0 for the
// first): the first retransmission timeout twice, then doubling as for
// the other requests (retransmitAfter). Someone waits for a Connect, and
// its first sends are the likeliest lost when an instance dies: a front
// door takes a few hundred milliseconds to move the flow, so the third
// send goes 500 ms after the first rather than 750 ms.
func (c *Client) connectAfter(try int) time.Duration {
	return c.retransmitAfter(max(try-1, 0))
}

func (c *Client) sendConnect(p *pending) error {
	c.mu.Lock()
	m := p.msg
	m.Cookie = c.cookie
	c.mu.Unlock()
	return c.send(&m)
}

func (c *Client) onConnectReply(r *wire.ConnectReply) {
	c.mu.Lock()
	p := c.pending[r.TxID]
	c.mu.Unlock()
	if p == nil {
		return // late, or a duplicate
	}
	res := result{reply: *r}
	if !r.Found {
		res = result{err: ErrPeerNotFound}
	}
	select {
	case p.done <- res:
	default:
	}
}

// onConnectChallenge takes the cookie and resends, once per round, every
// waiting Connect.
func (c *Client) onConnectChallenge() {
	c.mu.Lock()
	var again []*pending
	for _, p := range c.pending {
		if !p.retried {
			p.retried = true
			again = append(again, p)
		}
	}
	c.mu.Unlock()
	for _, p := range again {
		if err := c.sendConnect(p); err != nil {
			c.setError(err)
		}
	}
}

// failPending ends every waiting Connect with err.
func (c *Client) failPending(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.pending {
		select {
		case p.done <- result{err: err}:
		default:
		}
	}
}
