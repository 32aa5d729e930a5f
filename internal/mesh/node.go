package mesh

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keymesh/keymesh/internal/ratelimit"
)

// Defaults of Config.
const (
	// DefaultClockSkew is how far a message's send time may be from the
	// receiver's clock (instances keep NTP time).
	DefaultClockSkew = 10 * time.Second
	// DefaultRate and DefaultBurst limit each source address, in
	// authentic messages per second: an instance forwards other
	// instances' relay traffic, so the limit is high; it bounds what one
	// instance can make a receiver send.
	DefaultRate  = 200000
	DefaultBurst = 200000
	// DefaultUnverifiedRate is the tag checks per second, over all
	// sources, spent on messages from senders not yet authenticated at
	// their source (Config.UnverifiedRate): an instance needs one such
	// check when it starts or this node does, a stranger gets nothing
	// more. At a few microseconds per check of the largest message it is
	// a tenth of a core at most.
	DefaultUnverifiedRate = 20000
)

// Handler takes one authentic, fresh message: send payload to dst from the
// socket of kind. payload is valid until Handler returns.
type Handler func(kind Kind, dst netip.AddrPort, payload []byte)

// Config configures a Node.
type Config struct {
	// Key authenticates messages (NewKey over the peer secret). Required.
	Key *Key
	// Conn is the node's socket on the instance's private address: it
	// sends and receives mesh messages. Required; the caller opens and
	// closes it.
	Conn *net.UDPConn
	// Advertise is the address other instances reach this node at and
	// that its heartbeats name (Self): the instance's public address when
	// Conn is bound to a private one and the cloud maps the public address
	// 1:1 onto it (AWS), so that instances in other regions, whose private
	// networks do not reach this one, still can. Its messages to another
	// instance's public address then arrive from Advertise, as the
	// heartbeat check needs. Default: Conn's address.
	Advertise netip.AddrPort
	// Handle gets every accepted message. Required to receive.
	Handle Handler
	// Allow and AllowPrefixes, when either is not empty, list the only
	// source addresses accepted (the instances' mesh addresses, or the
	// private ranges they come from): anything else is dropped before any
	// other check, the tag's HMAC above all. SetAllow adds addresses
	// learnt at run time (a membership registry) and turns the list on.
	Allow         []netip.Addr
	AllowPrefixes []netip.Prefix
	// ClockSkew bounds the send-time difference. Default DefaultClockSkew.
	ClockSkew time.Duration
	// Rate and Burst limit the authentic messages per source address
	// (IPv6: /64) handed to Handle: what one instance can make this one
	// send. They are charged after the tag verified, so a flood spoofed
	// from an instance's address spends none of it; heartbeats are not
	// charged. Defaults DefaultRate and DefaultBurst; a negative Rate
	// turns the limit off.
	Rate, Burst float64
	// UnverifiedRate and UnverifiedBurst bound, over all sources, the tag
	// checks of messages whose sender has not yet been authenticated at
	// the address and port they come from: a stranger's forgeries (it
	// does not know the instances' random sender numbers) and the first
	// message of each instance. A message of a sender already
	// authenticated at its source has its tag checked without this budget,
	// so a stranger who spends it cannot silence a running instance.
	// Defaults: DefaultUnverifiedRate, and a burst of one second's
	// worth; a negative UnverifiedRate turns the cap off.
	UnverifiedRate, UnverifiedBurst float64
	// MaxSenders bounds the replay table. Default DefaultMaxSenders.
	MaxSenders int
	// Peers are the mesh addresses of the instances this node sends to:
	// it sends each a heartbeat (see Heartbeat) and Alive tells whether
	// each was heard from lately. Other peers are watched once Alive is
	// asked about them or they send a heartbeat, up to MaxWatched.
	// Heartbeats name the node's own address, so Conn must be bound to a
	// specific address.
	Peers []netip.AddrPort
	// MaxWatched bounds the peers watched beyond Peers. Default
	// DefaultMaxWatched.
	MaxWatched int
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Drop reasons, as counted in Stats.
const (
	DropMalformed   = iota // length, magic, version, kind or address
	DropStranger           // source not in Allow
	DropRateLimited        // an authentic message beyond its source's Rate
	DropStale              // send time outside ClockSkew
	DropBadTag
	DropReplay
	DropHeartbeatAddr // an authentic heartbeat naming another address than its source
	DropUnverified    // an unknown sender's message beyond the UnverifiedRate budget, tag unchecked
	numDrops
)

var dropNames = [numDrops]string{"malformed", "stranger", "rate_limited", "stale", "bad_tag", "replay", "heartbeat_addr", "unverified"}

// DropName names a drop reason (for metric labels).
func DropName(r int) string { return dropNames[r] }

// Stats are a Node's counters since it started.
type Stats struct {
	// Accepted counts the messages handed to Handle, Heartbeats the
	// authentic heartbeats.
	Sent, SendFailed, Received, Accepted, Heartbeats uint64
	Dropped                                          [numDrops]uint64
}

// Node sends and receives mesh messages on one socket. It is safe for
// concurrent use: any goroutine may Send while Serve runs.
type Node struct {
	cfg    Config
	log    *slog.Logger
	sender uint64
	seq    atomic.Uint64
	lim    *ratelimit.Limiter
	unver  *ratelimit.Budget // tag checks of unknown senders' messages
	replay *replayTable
	allow  atomic.Pointer[map[netip.Addr]struct{}] // nil: any source
	bufs   sync.Pool                               // of *[]byte, for Forward
	live   *liveness

	beatMu  sync.Mutex // guards beatTo and beatBuf
	beatTo  []netip.AddrPort
	beatBuf []byte

	sent, sendFailed, received, accepted, heartbeats atomic.Uint64
	dropped                                          [numDrops]atomic.Uint64
}

// NewNode checks cfg and returns a node. It starts nothing: call Serve to
// receive.
func NewNode(cfg Config) (*Node, error) {
	if cfg.Key == nil || cfg.Conn == nil {
		return nil, fmt.Errorf("%w: Key and Conn are required", ErrConfig)
	}
	if cfg.ClockSkew <= 0 {
		cfg.ClockSkew = DefaultClockSkew
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.UnverifiedRate == 0 {
		cfg.UnverifiedRate = DefaultUnverifiedRate
	}
	if cfg.UnverifiedBurst <= 0 {
		cfg.UnverifiedBurst = max(1, cfg.UnverifiedRate)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var s [8]byte
	if _, err := rand.Read(s[:]); err != nil {
		return nil, fmt.Errorf("mesh sender id: %w", err)
	}
	n := &Node{
		cfg:    cfg,
		log:    cfg.Logger,
		sender: binary.BigEndian.Uint64(s[:]),
		lim:    ratelimit.New(ratelimit.Config{PerSecond: cfg.Rate, Burst: cfg.Burst}),
		unver:  ratelimit.NewBudget(cfg.UnverifiedRate, cfg.UnverifiedBurst, cfg.Now().UnixNano()),
		replay: newReplayTable(cfg.MaxSenders),
		live:   newLiveness(cfg.MaxWatched, cfg.Peers, cfg.Now().UnixNano()),
	}
	if len(cfg.Allow) > 0 || len(cfg.AllowPrefixes) > 0 {
		n.SetAllow(nil)
	}
	if cfg.Advertise.IsValid() {
		if cfg.Advertise.Addr().IsUnspecified() || cfg.Advertise.Port() == 0 {
			return nil, fmt.Errorf("%w: Advertise %v is not a specific ip:port", ErrConfig, cfg.Advertise)
		}
		n.cfg.Advertise = unmapAP(cfg.Advertise)
	}
	n.bufs.New = func() any { b := make([]byte, 0, MaxMessage); return &b }
	return n, nil
}

// Addr is the node's socket address.
func (n *Node) Addr() netip.AddrPort {
	a := n.cfg.Conn.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// Self is the address the node names as its own: Config.Advertise, or the
// socket's address. Other instances send to it, and registrations record
// it as a peer's home.
func (n *Node) Self() netip.AddrPort {
	if n.cfg.Advertise.IsValid() {
		return n.cfg.Advertise
	}
	return n.Addr()
}

// SetAllow replaces the source addresses learnt at run time (other
// instances' addresses from a membership registry) and turns the source
// allow-list on: from then on a message is accepted from Config.Allow,
// Config.AllowPrefixes and these addresses only. The list is a cheap filter
// in front of the tag; it grants nothing: a message from an allowed address
// still needs the tag, the clock and the replay window.
func (n *Node) SetAllow(addrs []netip.Addr) {
	m := make(map[netip.Addr]struct{}, len(n.cfg.Allow)+len(addrs))
	for _, a := range n.cfg.Allow {
		m[a.Unmap()] = struct{}{}
	}
	for _, a := range addrs {
		m[a.Unmap()] = struct{}{}
	}
	n.allow.Store(&m)
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	s := Stats{
		Sent: n.sent.Load(), SendFailed: n.sendFailed.Load(),
		Received: n.received.Load(), Accepted: n.accepted.Load(), Heartbeats: n.heartbeats.Load(),
	}
	for i := range s.Dropped {
		s.Dropped[i] = n.dropped[i].Load()
	}
	return s
}

// Send writes one message to the instance at to, asking it to send payload
// to dst from its socket of kind. buf is scratch memory (give it capacity
// MaxMessage to avoid allocating); Send returns it for reuse.
func (n *Node) Send(buf []byte, to netip.AddrPort, kind Kind, dst netip.AddrPort, payload []byte) ([]byte, error) {
	m := Message{
		Kind: kind, Time: n.cfg.Now().UnixMilli(), Sender: n.sender, Seq: n.seq.Add(1),
		Dst: dst, Payload: payload,
	}
	buf, err := n.cfg.Key.Append(buf[:0], &m)
	if err != nil {
		n.sendFailed.Add(1)
		return buf, err
	}
	if _, err := n.cfg.Conn.WriteToUDPAddrPort(buf, to); err != nil {
		n.sendFailed.Add(1)
		return buf, fmt.Errorf("mesh send to %v: %w", to, err)
	}
	n.sent.Add(1)
	return buf, nil
}

// Forward is Send with a pooled buffer, for callers without scratch memory.
func (n *Node) Forward(to netip.AddrPort, kind Kind, dst netip.AddrPort, payload []byte) error {
	bp := n.bufs.Get().(*[]byte)
	b, err := n.Send(*bp, to, kind, dst, payload)
	*bp = b[:0]
	n.bufs.Put(bp)
	return err
}

// Serve reads messages until ctx ends (it then returns nil) or the socket
// fails, records who was heard (see Alive), and hands each accepted
// message but heartbeats to Config.Handle. Several goroutines
// may Serve one node at once (the handler then runs concurrently).
func (n *Node) Serve(ctx context.Context) error {
	if n.cfg.Handle == nil {
		return fmt.Errorf("%w: Handle is required to serve", ErrConfig)
	}
	c := n.cfg.Conn
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, MaxMessage+1)
	for {
		k, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("mesh socket: %w", err)
			}
			n.log.Debug("mesh read failed", "err", err)
			time.Sleep(time.Millisecond)
			continue
		}
		now := n.cfg.Now()
		if m, ok := n.check(buf[:k], from, now); ok && m.Kind != KindHeartbeat {
			n.cfg.Handle(m.Kind, m.Dst, m.Payload)
		}
	}
}

// check runs the receive checks, cheapest first, and counts the outcome.
//
// No budget an authenticated instance depends on is spent before the tag
// verified: a flood of forgeries spoofed from an instance's address must
// not get its real messages dropped (its heartbeats above all: its peers
// would route around a healthy instance). The tag checks themselves are
// bounded for strangers: a message whose sender number was not yet
// authenticated from the same address and port takes a token of the
// unverified budget first. Only an instance's own messages, or copies of
// them, carry its number; an off-path stranger never learns it.
func (n *Node) check(b []byte, from netip.AddrPort, now time.Time) (Message, bool) {
	n.received.Add(1)
	src := from.Addr().Unmap()
	if allow := n.allow.Load(); allow != nil && !n.allowed(*allow, src) {
		return Message{}, n.drop(DropStranger)
	}
	m, err := Parse(b)
	if err != nil {
		return m, n.drop(DropMalformed)
	}
	if d := now.UnixMilli() - m.Time; d > n.cfg.ClockSkew.Milliseconds() || d < -n.cfg.ClockSkew.Milliseconds() {
		return m, n.drop(DropStale)
	}
	from = netip.AddrPortFrom(src, from.Port())
	if !n.replay.known(m.Sender, from) && !n.unver.Allow(now.UnixNano()) {
		return m, n.drop(DropUnverified)
	}
	if !n.cfg.Key.Verify(b) {
		return m, n.drop(DropBadTag)
	}
	hb := m.Kind == KindHeartbeat
	if hb && m.Dst != from {
		return m, n.drop(DropHeartbeatAddr)
	}
	if !n.replay.accept(m.Sender, m.Seq, from) {
		return m, n.drop(DropReplay)
	}
	// Authentic and fresh: its source is alive, whatever its rate.
	n.heard(from, hb, now.UnixNano())
	if hb {
		n.heartbeats.Add(1)
		return m, true
	}
	if !n.lim.Allow(src, now.UnixNano()) {
		return m, n.drop(DropRateLimited)
	}
	n.accepted.Add(1)
	return m, true
}

// allowed reports whether src is in Config.Allow or AllowPrefixes.
func (n *Node) allowed(allow map[netip.Addr]struct{}, src netip.Addr) bool {
	if _, ok := allow[src]; ok {
		return true
	}
	for _, p := range n.cfg.AllowPrefixes {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

func (n *Node) drop(r int) bool {
	n.dropped[r].Add(1)
	return false
}
