package rendezvous

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// When the registry loses its records (its epoch changes: a Redis that came
// back empty), the peers that registered here would be unreachable until
// their next refresh, up to Config.Refresh later. So each instance keeps
// the peers that registered with it recently (ID, the address their
// Register came from with a valid cookie, their shared key) and, on an
// epoch change, sends each one sealed Error{NotRegistered} carrying the new
// epoch: they register again at once.
//
// What a stranger can do with it: nothing more than with a Register. Only
// a Register with a valid cookie (a proven source address) and a box that
// opens enters the table; the table is bounded (oldest out first); the
// epoch changes only when the registry lost its data, which no datagram
// can cause; and each entry gets one small datagram per change, paced.

// DefaultRecentPeers bounds the table of recent registrants.
const DefaultRecentPeers = 1 << 16

// nudgePace is how many nudges go out per nudgeTick.
const (
	nudgePace = 500
	nudgeTick = 10 * time.Millisecond
)

type registrant struct {
	addr netip.AddrPort
	key  [32]byte
}

// recentPeers is the bounded table of recent registrants, oldest evicted
// first.
type recentPeers struct {
	max int

	mu    sync.Mutex // guards the fields below
	peers map[crypto.PeerID]registrant
	order []crypto.PeerID // insertion order, a ring of up to max
	next  int
}

func newRecentPeers(max int) *recentPeers {
	return &recentPeers{max: max, peers: map[crypto.PeerID]registrant{}}
}

// note records a registration of id from addr.
func (r *recentPeers) note(id crypto.PeerID, addr netip.AddrPort, key *[32]byte) {
	if r.max <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.peers[id]; ok {
		r.peers[id] = registrant{addr: addr, key: *key}
		return
	}
	if len(r.order) < r.max {
		r.order = append(r.order, id)
	} else {
		delete(r.peers, r.order[r.next])
		r.order[r.next] = id
		r.next = (r.next + 1) % r.max
	}
	r.peers[id] = registrant{addr: addr, key: *key}
}

// take returns every entry and empties the table: a nudged peer registers
// again, and enters it anew.
func (r *recentPeers) take() []registrant {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]registrant, 0, len(r.peers))
	for _, p := range r.peers {
		out = append(out, p)
	}
	r.peers, r.order, r.next = map[crypto.PeerID]registrant{}, nil, 0
	return out
}

// nudge tells every recent registrant that the registry lost its record
// (a sealed Error{NotRegistered} with the new epoch), nudgePace per
// nudgeTick, through conn (the first socket Serve was given).
func (s *Server) nudge(ctx context.Context, epoch uint64) {
	conn, _ := s.out.Load().(net.PacketConn)
	if conn == nil {
		return
	}
	peers := s.recent.take()
	s.log.Info("telling the peers registered here to register again", "peers", len(peers))
	t := time.NewTicker(nudgeTick)
	defer t.Stop()
	var msg, out []byte
	for i, p := range peers {
		if i > 0 && i%nudgePace == 0 {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		body := &wire.Error{Code: wire.ErrCodeNotRegistered, For: wire.MsgRegister, Text: "registry lost", Epoch: epoch}
		msg = wire.AppendMessage(msg[:0], wire.Message{Time: s.cfg.Now().UnixMilli(), Body: body})
		out = wire.SealPlain(out[:0], s.id, &p.key, msg)
		if _, err := conn.WriteTo(out, net.UDPAddrFromAddrPort(p.addr)); err != nil {
			s.log.Debug("nudge not sent", "to", p.addr, "err", err)
		}
	}
}
