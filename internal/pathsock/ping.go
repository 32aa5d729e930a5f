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
// may be lost).
func (s *Sock) Ping(ctx context.Context, id crypto.PeerID) (PeerStatus, error) {
	pr := s.peerByID(id)
	if pr == nil {
		return PeerStatus{}, fmt.Errorf("%s: %w", id.Short(), ErrUnknownPeer)
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
		t := time.NewTimer(pingRetry)
		select {
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
