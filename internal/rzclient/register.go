package rzclient

import (
	"context"
	"fmt"
	"time"

	"github.com/keymesh/keymesh/internal/wire"
)

// Run registers now and keeps the registration fresh until ctx ends (then it
// returns nil): it re-registers every Refresh the server asked for, at once
// after Reregister, and retransmits with jittered exponential backoff
// (Config.Retransmit, doubled up to Config.MaxBackoff) while the server does
// not answer.
func (c *Client) Run(ctx context.Context) error {
	for {
		// One registration round: send until a Registered arrives.
		tries := 0
		select { // a stale signal from an earlier round means nothing now
		case <-c.regd:
		default:
		}
		for answered := false; !answered; {
			c.mu.Lock()
			c.regRetried = false
			c.mu.Unlock()
			if err := c.sendRegister(); err != nil {
				c.setError(err)
			}
			wait := c.after(c.retransmitAfter(tries))
			tries++
			select {
			case <-ctx.Done():
				return nil
			case <-c.regd:
				answered = true
			case <-c.kick:
				tries = 0
			case <-wait:
				if tries >= noAnswerAfter {
					c.mu.Lock()
					heard := c.cookieHeard
					c.mu.Unlock()
					if heard {
						c.setError(fmt.Errorf("%w %s after %d tries: it answers but cannot open our requests, so the server ID after # in the connect string is probably wrong", ErrNoAnswer, c.cfg.Server, tries))
					} else {
						c.setError(fmt.Errorf("%w %s after %d tries: is the server running, is UDP to it open, and is the server ID in the connect string right?", ErrNoAnswer, c.cfg.Server, tries))
					}
				}
			}
		}
		c.mu.Lock()
		refresh := c.st.Refresh
		c.mu.Unlock()
		if refresh <= 0 {
			refresh = DefaultRefresh
		}
		if !c.idle(ctx, refresh) {
			return nil
		}
	}
}

func (c *Client) sendRegister() error {
	m := &wire.Register{AllowAny: c.cfg.AllowAny, Allowed: c.cfg.Allowed, Token: c.cfg.Token}
	if c.cfg.Candidates != nil {
		m.Candidates = c.cfg.Candidates()
	}
	if c.cfg.Tickets != nil {
		m.Tickets = c.cfg.Tickets()
	}
	if c.cfg.NAT != nil {
		m.NAT = c.cfg.NAT()
	}
	c.mu.Lock()
	m.Cookie = c.cookie
	c.mu.Unlock()
	return c.send(m)
}

func (c *Client) onRegistered(r *wire.Registered) {
	c.mu.Lock()
	st := &c.st
	st.Reflexive = r.Reflexive
	st.Relays, st.StreamRelays, st.TURNURIs = r.Relays, r.StreamRelays, r.TURNURIs
	st.TURNUser, st.TURNPass = r.TURNUser, r.TURNPass
	st.Instance = r.Instance
	st.TTL = time.Duration(r.TTL) * time.Second
	st.Refresh = time.Duration(r.Refresh) * time.Second
	st.LastError = ""
	st.LastRegistered = c.cfg.Now()
	for _, p := range c.pending {
		select {
		case p.again <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()
	select {
	case c.regd <- struct{}{}:
	default:
	}
	if c.cfg.OnRegistered != nil {
		c.cfg.OnRegistered(*r)
	}
}

// onRegisterChallenge takes the cookie and, once per round, registers again
// at once.
func (c *Client) onRegisterChallenge() {
	c.mu.Lock()
	again := !c.regRetried
	c.regRetried = true
	c.mu.Unlock()
	if again {
		if err := c.sendRegister(); err != nil {
			c.setError(err)
		}
	}
}
