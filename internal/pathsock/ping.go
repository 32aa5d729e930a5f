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
		t := time.NewTimer(s.pingRetry)
		select {
		case <-met:
			met = nil // once
			t.Stop()
			s.forgetProbe(tx)
			continue
		case <-done:
			t.Stop()
			s.pendMu.Lock()
			p := s.pending[tx]
			delete(s.pending, tx)
			s.pendMu.Unlock()
			if p == nil || p.rtt == 0 {
				return PeerStatus{}, fmt.Errorf("ping %s: %w", id.Short(), net.ErrClosed)
			}
			st := PeerStatus{ID: id, Path: PathRelay, Remote: p.addr, RTT: p.rtt, LastSeen: s.now()}
			if p.direct {
				st.Path = PathDirect
			}
			return st, nil
		case <-ctx.Done():
			t.Stop()
			s.forgetProbe(tx)
			return PeerStatus{}, fmt.Errorf("ping %s over %s: %w: %w", id.Short(), r.kind, ErrPingTimeout, ctx.Err())
		case <-t.C:
			s.forgetProbe(tx)
		}
	}
}
