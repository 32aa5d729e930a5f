package wire

// The peer-peer messages: path probes and their replies, and the path
// updates a peer sends a connected peer. They travel in Sealed frames
// (sealed.go), directly or through a relay.

import "net/netip"

// Probe is a peer-to-peer path probe; the receiver answers with a
// ProbeReply on the path it came from.
type Probe struct {
	TxID uint64
	// Dest is the address the probe was sent to.
	Dest netip.AddrPort
}

// Type implements Body.
func (*Probe) Type() MsgType { return MsgProbe }

func (m *Probe) appendTo(w *writer) {
	w.u64(m.TxID)
	w.addr(m.Dest)
}

func (m *Probe) readFrom(r *reader) {
	m.TxID = r.u64()
	m.Dest = r.addr()
}

// ProbeReply answers a Probe.
type ProbeReply struct {
	TxID uint64
	// Observed is the probe's source address as the replier saw it.
	Observed netip.AddrPort
}

// Type implements Body.
func (*ProbeReply) Type() MsgType { return MsgProbeReply }

func (m *ProbeReply) appendTo(w *writer) {
	w.u64(m.TxID)
	w.addr(m.Observed)
}

func (m *ProbeReply) readFrom(r *reader) {
	m.TxID = r.u64()
	m.Observed = r.addr()
}

// PathUpdate tells a connected peer where the sender can now be reached
// (after its address changed or its tickets were renewed).
type PathUpdate struct {
	Info PeerInfo
}

// Type implements Body.
func (*PathUpdate) Type() MsgType { return MsgPathUpdate }

func (m *PathUpdate) appendTo(w *writer) { m.Info.appendTo(w) }
func (m *PathUpdate) readFrom(r *reader) { m.Info.readFrom(r) }
