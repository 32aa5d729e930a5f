package turnrelay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
)

// The ChannelData fast path.
//
// pion handles every datagram a client sends one at a time: a read, a
// request value, a lookup of the allocation by 5-tuple under the manager's
// lock, a scan of the channels under the allocation's, and a write through
// the relayed socket's net.PacketConn (an address allocated per packet).
// The server's readers (guardConn) instead take datagrams in batches and
// relay a ChannelData frame themselves when its 5-tuple and channel number
// name a channel pion has bound; everything else, including every frame for
// a channel the table does not hold, goes to pion as before and is handled
// (and refused) by it.
//
// The table is pion's own channel bindings, mirrored from its events:
// OnChannelCreated when a ChannelBind succeeds (after the permission
// handler, so after the address policy, passed the peer) and
// OnChannelDeleted when one ends, by expiry or with its allocation (an
// ending allocation deletes its channels before it closes its relayed
// socket). A refreshed binding keeps its entry. So a frame is relayed by the
// fast path exactly when pion would relay it: from the 5-tuple that bound
// the channel, for that channel number, to the peer it was bound to, and
// each send still passes ownConn's check of the relay's own address.
//
// One difference of bookkeeping, not of who may send what: pion keeps
// allocations per socket, and the table is shared by the server's
// SO_REUSEPORT sockets (which share their local address, so a client's
// 5-tuple is the same on each). The kernel delivers one 4-tuple to one
// socket of the group, so a frame from the client's address reaches the
// socket that holds its allocation either way.

// pionInboundMTU is pion's read buffer for the server's sockets (its
// default InboundMTU): pion drops a datagram of this size or more.
const pionInboundMTU = 1600

// channelDataHeader is the ChannelData header: channel number and length
// (RFC 8656 section 12.4).
const channelDataHeader = 4

// peerKey names a channel as a peer's datagram does: the relayed port it
// reaches and the peer's address.
type peerKey struct {
	relay uint16
	peer  netip.AddrPort
}

// peerRoute is where a bound channel's datagrams from its peer go: to the
// client, as ChannelData for number, through out (a socket with the
// 5-tuple's local address).
type peerRoute struct {
	client netip.AddrPort
	number uint16
	out    *guardConn
}

// chanKey names a channel as a client's frame does: the 5-tuple (the
// server socket's address and the client's; the protocol is UDP) and the
// channel number.
type chanKey struct {
	local, client netip.AddrPort
	number        uint16
}

// chanRoute is where a bound channel's frames go.
type chanRoute struct {
	relay *ownConn
	peer  netip.AddrPort
}

// channelTable mirrors pion's channel bindings of UDP clients, in both
// directions.
type channelTable struct {
	mu    sync.RWMutex
	m     map[chanKey]chanRoute
	peers map[peerKey]peerRoute
}

func newChannelTable() *channelTable {
	return &channelTable{m: make(map[chanKey]chanRoute), peers: make(map[peerKey]peerRoute)}
}

func (t *channelTable) lookup(k chanKey) (chanRoute, bool) {
	t.mu.RLock()
	r, ok := t.m[k]
	t.mu.RUnlock()
	return r, ok
}

func (t *channelTable) lookupPeer(k peerKey) (peerRoute, bool) {
	t.mu.RLock()
	r, ok := t.peers[k]
	t.mu.RUnlock()
	return r, ok
}

// set records channel k to route r, and the way back when out is a socket
// to send it on (nil: the peer's datagrams stay with pion).
func (t *channelTable) set(k chanKey, r chanRoute, out *guardConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m[k] = r
	if out != nil {
		t.peers[peerKey{relay: r.relay.port, peer: r.peer}] = peerRoute{client: k.client, number: k.number, out: out}
	}
}

func (t *channelTable) remove(k chanKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.m[k]
	if !ok {
		return
	}
	delete(t.m, k)
	pk := peerKey{relay: r.relay.port, peer: r.peer}
	if b, ok := t.peers[pk]; ok && b.client == k.client && b.number == k.number {
		delete(t.peers, pk)
	}
}

// len returns the channels held, each way.
func (t *channelTable) len() (clients, peers int) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m), len(t.peers)
}

// udpAddrPort returns a's address when it is a UDP one (a TCP client's
// channels stay with pion), unmapped.
func udpAddrPort(a net.Addr) (netip.AddrPort, bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.IsValid()
}

// channelKey builds the table key of pion's event arguments.
func channelKey(src, dst net.Addr, number uint16) (chanKey, bool) {
	client, ok := udpAddrPort(src)
	if !ok {
		return chanKey{}, false
	}
	local, ok := udpAddrPort(dst)
	if !ok {
		return chanKey{}, false
	}
	return chanKey{local: local, client: client, number: number}, true
}

// onChannelCreated is pion's OnChannelCreated: a ChannelBind for a new
// channel succeeded.
func (s *Server) onChannelCreated(src, dst net.Addr, _, _, _ string, relay, peer net.Addr, number uint16) {
	k, ok := channelKey(src, dst, number)
	if !ok {
		return
	}
	p, ok := udpAddrPort(peer)
	if !ok {
		return
	}
	rc := s.own.conn(portOf(relay))
	if rc == nil {
		return // not one of ours: pion relays it
	}
	s.channels.set(k, chanRoute{relay: rc, peer: p}, s.guardAt(k.local))
}

// guardAt returns the first of the server's UDP sockets at local, or nil.
func (s *Server) guardAt(local netip.AddrPort) *guardConn {
	for _, g := range s.guards {
		if g.local == local {
			return g
		}
	}
	return nil
}

// onChannelDeleted is pion's OnChannelDeleted: a channel expired or its
// allocation ended.
func (s *Server) onChannelDeleted(src, dst net.Addr, _, _, _ string, _, _ net.Addr, number uint16) {
	if k, ok := channelKey(src, dst, number); ok {
		s.channels.remove(k)
	}
}

// parseChannelData reads a ChannelData frame as pion does: a channel
// number in 0x4000-0x7FFF, a length the datagram holds, and the payload
// that length gives (what follows it is padding).
func parseChannelData(b []byte) (number uint16, payload []byte, ok bool) {
	if !isChannelData(b) {
		return 0, nil, false
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	return binary.BigEndian.Uint16(b[0:2]), b[channelDataHeader : channelDataHeader+n], true
}

// relayChannelData relays datagram b, which client sent to the socket at
// local, when it is a ChannelData frame for a channel the table holds,
// and reports whether it took the datagram. It does not take what pion
// would drop or refuse, so that pion drops and counts it as before.
//
// With w (the reader's batch writer), the datagram is queued there, and
// the reader flushes w before it reads again or hands pion a datagram.
func (s *Server) relayChannelData(w *batchWriter, local, client netip.AddrPort, b []byte) bool {
	if len(b) >= pionInboundMTU {
		return false
	}
	number, payload, ok := parseChannelData(b)
	if !ok {
		return false
	}
	r, ok := s.channels.lookup(chanKey{local: local, client: client, number: number})
	if !ok {
		return false
	}
	if w != nil && r.relay.raw != nil {
		if s.ownDestinationRefused(false, r.peer) {
			return true // dropped, as ownConn.WriteTo drops it
		}
		if w.full() {
			s.flush(w)
		}
		if w.add(r.relay.raw, payload, r.peer) {
			return true
		}
	}
	if err := r.relay.writeTo(payload, r.peer); err != nil {
		s.metrics.requestErrors.Inc()
	}
	return true
}

// flush sends what w holds, counting the datagrams that failed as pion
// counts a failed write.
func (s *Server) flush(w *batchWriter) {
	if w == nil {
		return
	}
	if failed := w.flush(); failed > 0 {
		s.metrics.requestErrors.Add(float64(failed))
	}
}

// relayFromPeer sends datagram d, which peer sent to relayed socket c, to
// the client as ChannelData when the table holds a channel for them, and
// reports whether it took the datagram. frame is d with channelDataHeader
// bytes of room before it and three after it: the frame is padded to a
// multiple of four bytes, as pion pads it.
func (s *Server) relayFromPeer(c *ownConn, peer netip.AddrPort, frame []byte, n int) bool {
	r, ok := s.channels.lookupPeer(peerKey{relay: c.port, peer: peer})
	if !ok {
		return false
	}
	binary.BigEndian.PutUint16(frame[0:2], r.number)
	binary.BigEndian.PutUint16(frame[2:4], uint16(n))
	end := channelDataHeader + n
	padded := (end + 3) &^ 3
	clear(frame[end:padded])
	if err := r.out.writeData(frame[:padded], r.client); err != nil {
		s.metrics.requestErrors.Inc()
	}
	return true
}
