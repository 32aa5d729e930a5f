package pathsock

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
)

// Ping sends a probe to peer over its active path and waits for the reply,
// probing again every pingRetry (the peer may not know us yet, or a probe
// may be lost), and at once when the first frame from a peer never heard
// from arrives: the peer now knows us, and dropped the probe sent before
// (a new session to a peer whose Punch came late, after its rendezvous
// instance died, answers then, not at the next retry).
func (s *Sock) Ping(ctx context.Context, id crypto.PeerID) (PeerStatus, error) {
	pr := s.peerByID(id)
	if pr == nil {
		return PeerStatus{}, fmt.Errorf("%s: %w", id.Short(), ErrUnknownPeer)
	}
	met := pr.met
	if pr.lastSeen.Load() != 0 {
		met = nil // heard from already
	}
	for {
		r := pr.route.Load()
		if r.kind == PathNone {
			return PeerStatus{}, fmt.Errorf("%s: %w", id.Short(), ErrNoPath)
		}
		done := make(chan struct{})
		tx := s.sendProbe(pr, r.kind == PathDirect, r.addr, done)
		if tx == 0 {
			return PeerStatus{}, fmt.Errorf("%s: %w", id.Short(), ErrNoPath)
		}
		st, again, err := s.pingWait(ctx, pr, r, tx, done, &met)
		if !again {
			return st, err
		}
	}
}

// pingRouteCheck is how often a waiting Ping looks whether the route
// changed under it (a direct path that came up while its probe went
// through the relay).
const pingRouteCheck = 25 * time.Millisecond

// pingWait waits for the reply to probe tx (sent on route r, done closed
// by the reply). again asks for a new probe: at pingRetry, when the first
// frame from a peer never heard from arrives (*met, then cleared), and when
// the route changed (the probe went the old way).
func (s *Sock) pingWait(ctx context.Context, pr *peer, r *route, tx uint64, done chan struct{}, met *chan struct{}) (st PeerStatus, again bool, err error) {
	t := time.NewTimer(s.pingRetry)
	defer t.Stop()
	tick := time.NewTicker(pingRouteCheck)
	defer tick.Stop()
	for {
		select {
		case <-*met:
			*met = nil // once
			s.forgetProbe(tx)
			return st, true, nil
		case <-tick.C:
			if nr := pr.route.Load(); nr != r && nr.kind != PathNone {
				s.forgetProbe(tx)
				return st, true, nil
			}
		case <-done:
			s.pendMu.Lock()
			p := s.pending[tx]
			delete(s.pending, tx)
			s.pendMu.Unlock()
			if p == nil || p.rtt == 0 {
				return st, false, fmt.Errorf("ping %s: %w", pr.id.Short(), net.ErrClosed)
			}
			st = PeerStatus{ID: pr.id, Path: PathRelay, Remote: p.addr, RTT: p.rtt, LastSeen: s.now()}
			if p.direct {
				st.Path = PathDirect
			}
			return st, false, nil
		case <-ctx.Done():
			s.forgetProbe(tx)
			return st, false, fmt.Errorf("ping %s over %s: %w: %w", pr.id.Short(), r.kind, ErrPingTimeout, ctx.Err())
		case <-t.C:
			s.forgetProbe(tx)
			return st, true, nil
		}
	}
}
