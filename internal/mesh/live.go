package mesh

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Peer liveness. A node sends a heartbeat to each peer it watches every
// HeartbeatInterval and counts a peer down once nothing authentic came from
// its address for DeadAfter. Callers then send from their own socket
// instead of through the dead peer.
const (
	// HeartbeatInterval is how often a node sends each watched peer a
	// heartbeat.
	HeartbeatInterval = 200 * time.Millisecond
	// DeadAfter is how long a peer may stay silent (no heartbeat, no
	// message) before Alive reports it down.
	DeadAfter = time.Second
	// SuspectAfter is how long a peer may stay silent before Suspect
	// reports it: two heartbeats missed and half an interval of jitter.
	// A suspect peer may be dead (a killed process, a region going down)
	// long before DeadAfter says so.
	SuspectAfter = 2*HeartbeatInterval + HeartbeatInterval/2
	// forgetAfter is how long a peer watched through Alive or learnt from
	// its heartbeats stays in the table once neither heard nor asked about.
	forgetAfter = 30 * time.Second
	// DefaultMaxWatched bounds the liveness table: peers watched at once.
	DefaultMaxWatched = 256
)

// liveness is the per-peer last-heard table, keyed by mesh address. The
// configured peers stay; others (watched through Alive, or learnt from their
// heartbeats so that a peer watching this node hears back) are forgotten
// after forgetAfter, and the one heard or used longest ago makes room when
// the table is full.
type liveness struct {
	mu    sync.RWMutex
	max   int // MaxWatched + fixed
	fixed int // configured peers
	peers map[netip.AddrPort]*peerLive
}

type peerLive struct {
	heard atomic.Int64 // Unix ns of the last authentic message; at first the time it was added
	used  atomic.Int64 // Unix ns of the last Alive call
	fixed atomic.Bool  // a configured peer: never forgotten
}

func newLiveness(max int, fixed []netip.AddrPort, now int64) *liveness {
	if max <= 0 {
		max = DefaultMaxWatched
	}
	l := &liveness{max: max, peers: make(map[netip.AddrPort]*peerLive, len(fixed))}
	l.setFixed(fixed, now)
	return l
}

func unmapAP(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }

func (l *liveness) get(a netip.AddrPort) *peerLive {
	l.mu.RLock()
	p := l.peers[a]
	l.mu.RUnlock()
	return p
}

// add returns a's entry, adding it (heard now: a new peer gets DeadAfter to
// answer) when there is room or a dynamic entry to evict; nil otherwise.
func (l *liveness) add(a netip.AddrPort, now int64) *peerLive {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.peers[a]; p != nil {
		return p
	}
	if len(l.peers) >= l.max {
		var (
			old   netip.AddrPort
			oldAt int64
			found bool
		)
		for k, p := range l.peers {
			if p.fixed.Load() {
				continue
			}
			at := max(p.heard.Load(), p.used.Load())
			if !found || at < oldAt {
				old, oldAt, found = k, at, true
			}
		}
		if !found {
			return nil
		}
		delete(l.peers, old)
	}
	p := &peerLive{}
	p.heard.Store(now)
	p.used.Store(now)
	l.peers[a] = p
	return p
}

// targets forgets the stale dynamic entries and appends the rest to dst.
func (l *liveness) targets(dst []netip.AddrPort, now int64) []netip.AddrPort {
	l.mu.Lock()
	defer l.mu.Unlock()
	for a, p := range l.peers {
		if !p.fixed.Load() && now-max(p.heard.Load(), p.used.Load()) > int64(forgetAfter) {
			delete(l.peers, a)
			continue
		}
		dst = append(dst, a)
	}
	return dst
}

// Alive reports whether the peer at to was heard from (heartbeat or
// message) within DeadAfter. A peer not yet watched is watched from now on
// and counts as alive for DeadAfter; when the table has no room it counts
// as alive (the mesh is then used as without liveness).
func (n *Node) Alive(to netip.AddrPort) bool {
	to = unmapAP(to)
	now := n.cfg.Now().UnixNano()
	p := n.live.get(to)
	if p == nil {
		if p = n.live.add(to, now); p == nil {
			return true
		}
	}
	if !p.fixed.Load() && now-p.used.Load() > int64(HeartbeatInterval) {
		p.used.Store(now)
	}
	return now-p.heard.Load() <= int64(DeadAfter)
}

// Suspect reports whether the watched peer at to has missed heartbeats:
// nothing came from it for SuspectAfter. A caller that hands traffic to a
// suspect peer may also send it another way until the peer is heard again
// or Alive gives it up. A peer not watched is not suspect.
func (n *Node) Suspect(to netip.AddrPort) bool {
	p := n.live.get(unmapAP(to))
	return p != nil && n.cfg.Now().UnixNano()-p.heard.Load() > int64(SuspectAfter)
}

// heard records an accepted message from from. A heartbeat from a peer not
// watched yet adds it, so that a node watching this one hears back.
func (n *Node) heard(from netip.AddrPort, heartbeat bool, now int64) {
	p := n.live.get(from)
	if p == nil {
		if !heartbeat {
			return
		}
		if p = n.live.add(from, now); p == nil {
			return
		}
	}
	if now > p.heard.Load() {
		p.heard.Store(now)
	}
}

// setFixed makes peers the configured set: they are watched for good, and
// the configured peers no longer among them become ordinary watched entries
// (forgotten once neither heard nor asked about for forgetAfter). The
// table's bound is MaxWatched beyond the set.
func (l *liveness) setFixed(peers []netip.AddrPort, now int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	want := make(map[netip.AddrPort]struct{}, len(peers))
	for _, a := range peers {
		want[unmapAP(a)] = struct{}{}
	}
	for a, p := range l.peers {
		if _, ok := want[a]; ok {
			p.fixed.Store(true)
		} else if p.fixed.Load() {
			p.fixed.Store(false)
			p.used.Store(now)
		}
	}
	l.max += len(want) - l.fixed
	l.fixed = len(want)
	for a := range want {
		if l.peers[a] == nil {
			p := &peerLive{}
			p.fixed.Store(true)
			p.heard.Store(now)
			l.peers[a] = p
		}
	}
}

// SetPeers replaces Config.Peers, the peers the node watches for good (a
// membership registry's current list). A new peer counts as alive for
// DeadAfter, as at the start.
func (n *Node) SetPeers(peers []netip.AddrPort) {
	n.live.setFixed(peers, n.cfg.Now().UnixNano())
}

// Beat sends one heartbeat to each watched peer (Heartbeat calls it every
// HeartbeatInterval), naming Self.
func (n *Node) Beat() {
	self, bound := n.Self(), n.Addr()
	n.beatMu.Lock()
	defer n.beatMu.Unlock()
	n.beatTo = n.live.targets(n.beatTo[:0], n.cfg.Now().UnixNano())
	for _, to := range n.beatTo {
		if to == self || to == bound {
			continue
		}
		var err error
		n.beatBuf, err = n.Send(n.beatBuf, to, KindHeartbeat, self, nil)
		if err != nil {
			n.log.Debug("mesh heartbeat failed", "to", to, "err", err)
		}
	}
}

// Heartbeat sends heartbeats every HeartbeatInterval until ctx ends.
func (n *Node) Heartbeat(ctx context.Context) {
	t := time.NewTicker(HeartbeatInterval)
	defer t.Stop()
	for {
		n.Beat()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
