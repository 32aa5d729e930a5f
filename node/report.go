package node

import (
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/pathsock"
	"github.com/keymesh/keymesh/internal/wire"
)

// Outcome reports: after a traversal settles (a direct path, or
// reportSettle without one) or the node closes, the node sends the
// rendezvous a wire.Report with both sides' NAT behaviours, the outcome and
// its times; Config.NoReports turns them off.
const (
	// reportSettle is how long a traversal without a direct path is
	// watched before it is reported as it stands (relayed or failed):
	// longer than any punch, birthday-paradox punching included.
	reportSettle = 30 * time.Second
	// reportPoll is how often watched traversals are looked at: the
	// resolution of the reported times.
	reportPoll = 20 * time.Millisecond
	// maxWatched bounds the traversals watched at once; beyond it new
	// ones go unreported.
	maxWatched = 256
)

// traversal is one session's way to a path, from its introduction.
type traversal struct {
	initiator bool
	remoteNAT wire.NAT
	start     time.Time
	firstByte time.Duration // 0: no frame from the peer yet
	toDirect  time.Duration // 0: no direct path yet
	path      string        // last path seen
	switches  int
}

// watchTraversal starts watching the traversal to id, introduced at start
// (by our Connect when initiator, else by the peer's Punch). A peer whose
// traversal is watched, or was reported within reportSettle, is not
// watched again: a retransmitted Connect repeats its Punch.
func (n *Node) watchTraversal(id crypto.PeerID, remoteNAT wire.NAT, initiator bool, start time.Time) {
	if n.noReports {
		return
	}
	n.rmu.Lock()
	defer n.rmu.Unlock()
	if _, ok := n.watched[id]; ok {
		return
	}
	if at, ok := n.reported[id]; ok && start.Sub(at) < reportSettle {
		return
	}
	if len(n.watched) >= maxWatched {
		n.log.Debug("too many traversals watched: this one goes unreported", "peer", id.Short())
		return
	}
	n.watched[id] = &traversal{initiator: initiator, remoteNAT: remoteNAT, start: start}
	select {
	case n.rwake <- struct{}{}:
	default:
	}
}

// reportLoop looks at the watched traversals every reportPoll while there
// are any, and reports those that settled.
func (n *Node) reportLoop() {
	defer n.wg.Done()
	t := time.NewTicker(reportPoll)
	defer t.Stop()
	for {
		n.rmu.Lock()
		idle := len(n.watched) == 0
		n.rmu.Unlock()
		if idle {
			select {
			case <-n.ctx.Done():
				return
			case <-n.rwake:
			}
		}
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			n.pollTraversals(time.Now(), false)
		}
	}
}

// pollTraversals updates every watched traversal from the path layer and
// reports those that settled (all of them when flush is set).
func (n *Node) pollTraversals(now time.Time, flush bool) {
	n.rmu.Lock()
	var done []wire.Report
	for id, tr := range n.watched {
		st, _ := n.sock.Peer(id)
		tr.observe(st, now)
		if !flush && tr.toDirect == 0 && now.Sub(tr.start) < reportSettle {
			continue
		}
		done = append(done, n.reportOf(tr))
		delete(n.watched, id)
		n.reported[id] = now
	}
	if len(n.reported) > maxWatched {
		for id, at := range n.reported {
			if now.Sub(at) >= reportSettle {
				delete(n.reported, id)
			}
		}
	}
	n.rmu.Unlock()
	for _, r := range done {
		if err := n.rz.Report(r); err != nil {
			n.log.Debug("outcome report not sent", "err", err)
		}
	}
}

// observe takes in the peer's path status at now.
func (tr *traversal) observe(st pathsock.PeerStatus, now time.Time) {
	if tr.firstByte == 0 && !st.LastSeen.IsZero() && !st.LastSeen.Before(tr.start) {
		tr.firstByte = max(st.LastSeen.Sub(tr.start), time.Millisecond)
	}
	if tr.firstByte == 0 {
		return // a relay route before any frame came is no path yet
	}
	if st.Path != tr.path && st.Path != pathsock.PathNone && tr.path != "" && tr.path != pathsock.PathNone {
		tr.switches++
	}
	tr.path = st.Path
	if st.Path == pathsock.PathDirect && tr.toDirect == 0 {
		tr.toDirect = max(now.Sub(tr.start), tr.firstByte)
	}
}

// reportOf is the report of a traversal as it stands.
func (n *Node) reportOf(tr *traversal) wire.Report {
	r := wire.Report{
		Initiator: tr.initiator,
		LocalNAT:  n.natBehaviour(),
		RemoteNAT: tr.remoteNAT,
		Outcome:   wire.OutcomeFailed,
		Switches:  uint16(min(tr.switches, 65535)),
	}
	switch {
	case tr.toDirect > 0:
		r.Outcome = wire.OutcomeDirect
		r.DirectMs = ms(tr.toDirect)
	case tr.firstByte > 0 && (n.sock.Tunneled() || tr.remoteNAT == wire.NATUDPBlocked):
		r.Outcome = wire.OutcomeRelayStream
	case tr.firstByte > 0:
		r.Outcome = wire.OutcomeRelayUDP
	}
	if r.Outcome != wire.OutcomeFailed {
		r.FirstByteMs = ms(tr.firstByte)
	}
	return r
}

func ms(d time.Duration) uint32 { return uint32(min(d.Milliseconds(), 1<<32-1)) }
