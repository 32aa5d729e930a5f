// Package rzclient is the peer side of the rendezvous protocol: it registers
// the peer with a rendezvous server and keeps the registration fresh, asks
// the server to introduce it to other peers (Connect), and hands the Punch
// messages the server relays from other peers to the path layer.
//
// It owns no socket. The caller (the path layer, which owns the peer's one
// UDP socket) gives it a Send function and passes it every sealed frame
// whose sender key is the server's (HandleFrame). Every message is a NaCl
// box to the pinned server key: a server that does not hold that key cannot
// read a Register nor forge an answer.
package rzclient

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/replay"
	"github.com/keymesh/keymesh/internal/wire"
)

// Defaults of Config.
const (
	// DefaultRetransmit is the first retransmission timeout: one lost
	// datagram costs about this much.
	DefaultRetransmit = 250 * time.Millisecond
	DefaultMaxBackoff = 8 * time.Second
	DefaultRefresh    = 20 * time.Second
	DefaultClockSkew  = 30 * time.Second
	// DefaultConnectTries is how many times Connect sends its request
	// before it gives up with ErrNoAnswer: with the default timeouts, after
	// about 24 s (0.25+0.25+0.5+1+2+4+8+8: connectAfter).
	DefaultConnectTries = 8
	// jitterSpread is the share by which each retransmission timeout is
	// drawn above or below its nominal value, so that peers that lost
	// datagrams at the same moment do not retransmit together.
	jitterSpread = 0.2
	// saltRing is how many of its recent requests' salts the client keeps
	// to match CookieReplies against.
	saltRing = 32
	// replayCacheSize bounds the client's replay cache of server frames.
	replayCacheSize = 1 << 14
	// noAnswerAfter is how many unanswered Registers make Status say so.
	noAnswerAfter = 3
)

// Config configures a Client.
type Config struct {
	// Identity is the peer's key pair. Required.
	Identity *crypto.Identity
	// Server is the rendezvous address, ServerKey its pinned key (both
	// from ParseServer). Required.
	Server    netip.AddrPort
	ServerKey crypto.PeerID
	// Send sends a datagram from the peer's socket. It must not keep b
	// after it returns. Required.
	Send func(b []byte, to netip.AddrPort) error
	// Candidates, Tickets and NAT report the peer's LAN addresses, its
	// relay tickets and its NAT behaviour for each
	// Register. Optional.
	Candidates func() []netip.AddrPort
	Tickets    func() [][]byte
	NAT        func() wire.NAT
	// AllowAny and Allowed are the peer's policy: who the server may
	// introduce to it. Punches from peers outside it are dropped here too.
	AllowAny bool
	Allowed  []crypto.PeerID
	// Token is the join token, when the server requires one.
	Token []byte
	// OnPunch is called (from HandleFrame) when another peer connects to
	// us. A retransmitted Connect may repeat a Punch with the same TxID.
	OnPunch func(wire.Punch)
	// OnRegistered is called (from HandleFrame) on every registration.
	OnRegistered func(wire.Registered)
	// Logger defaults to a discarding logger.
	Logger *slog.Logger
	// Now is the clock that stamps messages. Default time.Now.
	Now func() time.Time
	// Retransmit is the first retransmission timeout (default
	// DefaultRetransmit), doubled after each try up to MaxBackoff (default
	// DefaultMaxBackoff); each timeout is drawn within ±20% of that.
	Retransmit, MaxBackoff time.Duration
	// ConnectTries bounds Connect's sends. Default DefaultConnectTries.
	ConnectTries int
	// Keepalive is the interval of keepalives between registrations (see
	// keepalive.go); 0 sends none. The peer command's default is
	// DefaultKeepalive.
	Keepalive time.Duration
	// ClockSkew is how far a server message's clock may be from ours.
	// Default DefaultClockSkew.
	ClockSkew time.Duration
	// OnAsk is called after each request the server answers (Register,
	// Connect, Keepalive) went out, OnAnswer for each sealed frame from
	// the server that opened under the pinned key, within ClockSkew and
	// not replayed (a forger's or a replayed frame calls nothing). With
	// them the caller learns whether the path to the server still works
	// (node's UDP watch). Optional; neither may block.
	OnAsk, OnAnswer func()
	// Seen is the replay cache of server frames; default a cache of the
	// client's own. Clients of one identity that share a server (the
	// node's main client and the one probing UDP from another socket)
	// share it, so that a frame one of them took cannot be replayed to
	// the other.
	Seen *replay.Cache
}

func (c *Config) validate() error {
	switch {
	case c.Identity == nil:
		return fmt.Errorf("%w: Identity is required", ErrConfig)
	case !c.Server.IsValid():
		return fmt.Errorf("%w: Server address is required", ErrConfig)
	case c.ServerKey.IsZero():
		return fmt.Errorf("%w: ServerKey is required", ErrConfig)
	case c.Send == nil:
		return fmt.Errorf("%w: Send is required", ErrConfig)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Retransmit <= 0 {
		c.Retransmit = DefaultRetransmit
	}
	if c.MaxBackoff < c.Retransmit {
		c.MaxBackoff = max(DefaultMaxBackoff, c.Retransmit)
	}
	if c.ConnectTries <= 0 {
		c.ConnectTries = DefaultConnectTries
	}
	if c.ClockSkew <= 0 {
		c.ClockSkew = DefaultClockSkew
	}
	c.Server = netip.AddrPortFrom(c.Server.Addr().Unmap(), c.Server.Port())
	return nil
}

// Status is what the client knows of its registration.
type Status struct {
	Server    netip.AddrPort
	ServerKey crypto.PeerID
	// Registered is true while the last registration is within its TTL.
	Registered bool
	// Reflexive is our address as the server saw it.
	Reflexive    netip.AddrPort
	Relays       []string
	StreamRelays []string
	TURNUser     string
	TURNPass     string
	TURNURIs     []string
	// Instance names the server instance that last answered.
	Instance     string
	TTL, Refresh time.Duration
	// LastError says why the last exchange failed ("" after a success).
	LastError      string
	LastRegistered time.Time
	// Epoch is the server registry's boot epoch last heard (0: none).
	Epoch uint64
}

// Client is the peer side of the rendezvous protocol. Its methods are safe
// for concurrent use.
type Client struct {
	cfg    Config
	log    *slog.Logger
	me     crypto.PeerID
	shared [32]byte
	seen   *replay.Cache
	kick   chan struct{} // Reregister
	regd   chan struct{} // a Registered arrived
	kaAck  chan struct{} // a KeepaliveAck arrived (keepalive.go)

	// after and jitter are the retransmission clock and its randomness
	// (time.After and a uniform draw in [0, 1); tests inject their own).
	after  func(time.Duration) <-chan time.Time
	jitter func() float64

	mu     sync.Mutex
	cookie crypto.Cookie
	salts  [saltRing]sentSalt // of recent requests, for CookieReplies
	// cookieHeard: a CookieReply answered one of our requests, so the
	// server is there; if sealed answers never come, it cannot open our
	// boxes, and the server ID we seal to is the likely fault.
	cookieHeard bool
	saltNext    int
	st          Status
	regRetried  bool // a challenge was answered in this register round
	// lastRegister is the send time (Unix ms) of our last Register: the
	// server stores a Register only over an older one, so each is stamped
	// at least a millisecond after the one before.
	lastRegister int64
	epochKicked  time.Time // last registration a changed epoch started
	instKicked   time.Time // last registration another instance started
	// kaAnswered: the current keepalive round was answered; kaHeard: the
	// server has answered a keepalive (an older one drops them).
	kaAnswered, kaHeard bool
	pending             map[uint64]*pending
	reports             []wire.Report // sent since the last report challenge
}

// sentSalt is a recent request's salt and its message type.
type sentSalt struct {
	salt [wire.SaltLen]byte
	t    wire.MsgType
}

// pending is a Connect waiting for its reply.
type pending struct {
	msg     wire.Connect
	retried bool // a challenge was answered in this round
	done    chan result
	// again asks for a send now: a registration just succeeded (perhaps
	// with another instance, after ours died and the last send was lost).
	again chan struct{}
}

type result struct {
	reply wire.ConnectReply
	err   error
}

// New checks cfg and returns a client. It sends nothing until Run or
// Connect.
func New(cfg Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	k, err := cfg.Identity.SharedKey(cfg.ServerKey)
	if err != nil {
		return nil, fmt.Errorf("%w: server key: %v", ErrConfig, err)
	}
	c := &Client{
		cfg:     cfg,
		log:     cfg.Logger,
		me:      cfg.Identity.ID(),
		shared:  *k,
		seen:    cfg.Seen,
		after:   time.After,
		jitter:  mrand.Float64,
		kick:    make(chan struct{}, 1),
		kaAck:   make(chan struct{}, 1),
		regd:    make(chan struct{}, 1),
		pending: map[uint64]*pending{},
	}
	if c.seen == nil {
		c.seen = NewReplayCache(cfg.ClockSkew)
	}
	c.st.Server, c.st.ServerKey = cfg.Server, cfg.ServerKey
	return c, nil
}

// send seals body to the server in a Request frame, whose nonce proves the
// cookie we hold (if any), and sends it.
func (c *Client) send(body wire.Body) error {
	stamp := c.cfg.Now().UnixMilli()
	c.mu.Lock()
	if body.Type() == wire.MsgRegister {
		stamp = max(stamp, c.lastRegister+1)
		c.lastRegister = stamp
	}
	cookie := c.cookie
	c.mu.Unlock()
	plain := wire.AppendMessage(make([]byte, 0, 512), wire.Message{Time: stamp, Body: body})
	b, salt := wire.SealRequest(make([]byte, 0, 512), c.me, &c.shared, plain, &cookie)
	c.mu.Lock()
	c.salts[c.saltNext] = sentSalt{salt: salt, t: body.Type()}
	c.saltNext = (c.saltNext + 1) % saltRing
	c.mu.Unlock()
	if err := c.cfg.Send(b, c.cfg.Server); err != nil {
		return fmt.Errorf("send to rendezvous %s: %w", c.cfg.Server, err)
	}
	if c.cfg.OnAsk != nil {
		switch body.Type() {
		case wire.MsgRegister, wire.MsgConnect, wire.MsgKeepalive:
			c.cfg.OnAsk()
		}
	}
	return nil
}

// NewReplayCache returns a replay cache of server frames for Config.Seen,
// for clients with clock skew skew (0: DefaultClockSkew).
func NewReplayCache(skew time.Duration) *replay.Cache {
	if skew <= 0 {
		skew = DefaultClockSkew
	}
	return replay.New(2*skew, replayCacheSize)
}

func (c *Client) setError(err error) {
	c.mu.Lock()
	c.st.LastError = err.Error()
	c.mu.Unlock()
}

// Status returns a snapshot of the registration state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	st.Registered = !st.LastRegistered.IsZero() && c.cfg.Now().Sub(st.LastRegistered) < st.TTL
	st.Relays = append([]string(nil), st.Relays...)
	st.StreamRelays = append([]string(nil), st.StreamRelays...)
	st.TURNURIs = append([]string(nil), st.TURNURIs...)
	return st
}

// Reregister makes Run register again at once (after an address change).
func (c *Client) Reregister() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// retransmitAfter is how long to wait for an answer after the try-th send
// of a request (0 for the first): Retransmit doubled per try up to
// MaxBackoff, drawn within ±jitterSpread of that.
func (c *Client) retransmitAfter(try int) time.Duration {
	d := c.cfg.Retransmit
	for i := 0; i < try && d < c.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.cfg.MaxBackoff)
	return time.Duration(float64(d) * (1 - jitterSpread + 2*jitterSpread*c.jitter()))
}

func randomTxID() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return binary.BigEndian.Uint64(b[:])
}
