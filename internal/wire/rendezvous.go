package wire

// The peer-rendezvous messages: a peer's Register and Connect (and Report,
// in report.go), the rendezvous' Registered, Challenge, ConnectReply, Punch
// and Error. They travel sealed, a peer's inside Request frames (request.go).

import (
	"net/netip"

	"github.com/keymesh/keymesh/internal/crypto"
)

// Register asks the rendezvous to index the sender. Its reflexive address is
// the frame's source address, which the server records itself.
type Register struct {
	// Cookie proves the sender owns its source address (zero until the
	// server has handed one out in a Challenge).
	Cookie crypto.Cookie
	// NAT is the sender's measured mapping behaviour.
	NAT NAT
	// Candidates are the sender's own (LAN) addresses.
	Candidates []netip.AddrPort
	// Tickets are relay tickets through which the sender can be reached.
	Tickets [][]byte
	// AllowAny and Allowed are the sender's connect policy.
	AllowAny bool
	Allowed  []crypto.PeerID
	// Token is a join token, when the server requires one.
	Token []byte
}

// Type implements Body.
func (*Register) Type() MsgType { return MsgRegister }

func (m *Register) appendTo(w *writer) {
	w.raw(m.Cookie[:])
	w.u8(byte(m.NAT))
	w.addrs(m.Candidates)
	w.tickets(m.Tickets)
	w.bool(m.AllowAny)
	allowed := m.Allowed
	if len(allowed) > MaxAllowed {
		allowed = allowed[:MaxAllowed]
	}
	w.u8(byte(len(allowed)))
	for _, id := range allowed {
		w.id(id)
	}
	w.bytes(m.Token)
}

func (m *Register) readFrom(r *reader) {
	copy(m.Cookie[:], r.need(crypto.CookieSize))
	m.NAT = NAT(r.u8())
	m.Candidates = r.addrs()
	m.Tickets = r.tickets()
	m.AllowAny = r.bool()
	n := r.count(MaxAllowed)
	for i := 0; i < n && r.err == nil; i++ {
		m.Allowed = append(m.Allowed, r.id())
	}
	m.Token = r.bytes()
}

// Registered confirms a registration.
type Registered struct {
	// Reflexive is the sender's address as the server saw it.
	Reflexive netip.AddrPort
	// TTL is how long the registration lives, Refresh how often to renew
	// it, in seconds.
	TTL, Refresh uint16
	// Relays are the relay servers the rendezvous advertises (host:port).
	Relays []string
	// StreamRelays are TLS stream relay URLs for networks without UDP.
	StreamRelays []string
	// TURNUser and TURNPass are fresh TURN REST-API credentials, TURNURIs
	// where to use them (empty when the server hands none out).
	TURNUser, TURNPass string
	TURNURIs           []string
	// Instance names the rendezvous instance that answered.
	Instance string
	// Epoch is the registry's boot epoch (optional trailer; see the version history).
	Epoch uint64
}

// Type implements Body.
func (*Registered) Type() MsgType { return MsgRegistered }

func (m *Registered) appendTo(w *writer) {
	w.addr(m.Reflexive)
	w.u16(m.TTL)
	w.u16(m.Refresh)
	w.strs(m.Relays)
	w.strs(m.StreamRelays)
	w.str(m.TURNUser)
	w.str(m.TURNPass)
	w.strs(m.TURNURIs)
	w.str(m.Instance)
	w.epoch(m.Epoch)
}

func (m *Registered) readFrom(r *reader) {
	m.Reflexive = r.addr()
	m.TTL = r.u16()
	m.Refresh = r.u16()
	m.Relays = r.strs()
	m.StreamRelays = r.strs()
	m.TURNUser = r.str()
	m.TURNPass = r.str()
	m.TURNURIs = r.strs()
	m.Instance = r.str()
	m.Epoch = r.epoch()
}

// Challenge hands the sender a cookie for its address; the sender repeats
// its request with it. A challenge is never larger than the request it
// answers.
type Challenge struct {
	Cookie crypto.Cookie
	// For echoes the type of the request being challenged.
	For MsgType
}

// Type implements Body.
func (*Challenge) Type() MsgType { return MsgChallenge }

func (m *Challenge) appendTo(w *writer) {
	w.raw(m.Cookie[:])
	w.u8(byte(m.For))
}

func (m *Challenge) readFrom(r *reader) {
	copy(m.Cookie[:], r.need(crypto.CookieSize))
	m.For = MsgType(r.u8())
}

// Connect asks the rendezvous to introduce the sender to a peer, named by
// peer ID or by overlay address (exactly one is set).
type Connect struct {
	Cookie     crypto.Cookie
	TxID       uint64
	Target     crypto.PeerID
	TargetAddr netip.Addr
}

// Type implements Body.
func (*Connect) Type() MsgType { return MsgConnect }

func (m *Connect) appendTo(w *writer) {
	w.raw(m.Cookie[:])
	w.u64(m.TxID)
	w.id(m.Target)
	var a [16]byte
	if m.TargetAddr.IsValid() {
		a = m.TargetAddr.As16()
	}
	w.raw(a[:])
}

func (m *Connect) readFrom(r *reader) {
	copy(m.Cookie[:], r.need(crypto.CookieSize))
	m.TxID = r.u64()
	m.Target = r.id()
	if v := r.need(16); v != nil {
		var a [16]byte
		copy(a[:], v)
		if a != ([16]byte{}) {
			m.TargetAddr = netip.AddrFrom16(a)
		}
	}
}

// PeerInfo is where a peer can be reached.
type PeerInfo struct {
	ID         crypto.PeerID
	Reflexive  netip.AddrPort
	Candidates []netip.AddrPort
	Tickets    [][]byte
	NAT        NAT
}

func (p *PeerInfo) appendTo(w *writer) {
	w.id(p.ID)
	w.addr(p.Reflexive)
	w.addrs(p.Candidates)
	w.tickets(p.Tickets)
	w.u8(byte(p.NAT))
}

func (p *PeerInfo) readFrom(r *reader) {
	p.ID = r.id()
	p.Reflexive = r.addr()
	p.Candidates = r.addrs()
	p.Tickets = r.tickets()
	p.NAT = NAT(r.u8())
}

// ConnectReply answers a Connect. A peer that is not registered and a peer
// whose policy refuses the requester get the same answer: Found false.
type ConnectReply struct {
	TxID  uint64
	Found bool
	Peer  PeerInfo
	// Start is when both sides begin punching (Unix ms).
	Start int64
	// Epoch is the registry's boot epoch (optional trailer; see the version history).
	Epoch uint64
}

// Type implements Body.
func (*ConnectReply) Type() MsgType { return MsgConnectReply }

func (m *ConnectReply) appendTo(w *writer) {
	w.u64(m.TxID)
	w.bool(m.Found)
	m.Peer.appendTo(w)
	w.u64(uint64(m.Start))
	w.epoch(m.Epoch)
}

func (m *ConnectReply) readFrom(r *reader) {
	m.TxID = r.u64()
	m.Found = r.bool()
	m.Peer.readFrom(r)
	m.Start = int64(r.u64())
	m.Epoch = r.epoch()
}

// Punch tells the target of a Connect who wants it and when to punch.
type Punch struct {
	TxID  uint64
	Peer  PeerInfo
	Start int64
	// Epoch is the registry's boot epoch (optional trailer; see the version history).
	Epoch uint64
}

// Type implements Body.
func (*Punch) Type() MsgType { return MsgPunch }

func (m *Punch) appendTo(w *writer) {
	w.u64(m.TxID)
	m.Peer.appendTo(w)
	w.u64(uint64(m.Start))
	w.epoch(m.Epoch)
}

func (m *Punch) readFrom(r *reader) {
	m.TxID = r.u64()
	m.Peer.readFrom(r)
	m.Start = int64(r.u64())
	m.Epoch = r.epoch()
}

// Error codes.
const (
	ErrCodeInternal      byte = 1
	ErrCodeNotRegistered byte = 2 // the sender must register before it connects
	ErrCodeRateLimited   byte = 3
	ErrCodeBadToken      byte = 4
	ErrCodeUnavailable   byte = 5 // the registry is down
)

// Error reports a refused request.
type Error struct {
	Code byte
	For  MsgType
	Text string
	// Epoch is the registry's boot epoch (optional trailer; see the version history).
	Epoch uint64
}

// Type implements Body.
func (*Error) Type() MsgType { return MsgError }

func (m *Error) appendTo(w *writer) {
	w.u8(m.Code)
	w.u8(byte(m.For))
	w.str(m.Text)
	w.epoch(m.Epoch)
}

func (m *Error) readFrom(r *reader) {
	m.Code = r.u8()
	m.For = MsgType(r.u8())
	m.Text = r.str()
	m.Epoch = r.epoch()
}
