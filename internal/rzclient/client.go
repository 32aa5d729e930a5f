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
	"net/netip"
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/obs"
	"github.com/keymesh/keymesh/internal/replay"
	"github.com/keymesh/keymesh/internal/wire"
)

// Defaults of Config.
const (
	DefaultRetransmit = time.Second
	DefaultMaxBackoff = 8 * time.Second
	DefaultRefresh    = 20 * time.Second
	DefaultMaxSkew    = 30 * time.Second
	// DefaultConnectTries is how many times Connect sends its request
	// before it gives up with ErrNoAnswer.
	DefaultConnectTries = 5
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
	// relay tickets and its NAT type (a wire.NAT* constant) for each
	// Register. Optional.
	Candidates func() []netip.AddrPort
	Tickets    func() [][]byte
	NAT        func() byte
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
	// DefaultRetransmit), doubled up to MaxBackoff (default
	// DefaultMaxBackoff).
	Retransmit, MaxBackoff time.Duration
	// ConnectTries bounds Connect's sends. Default DefaultConnectTries.
	ConnectTries int
	// MaxSkew is how far a server message's clock may be from ours.
	// Default DefaultMaxSkew.
	MaxSkew time.Duration
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
		c.Logger = obs.Discard()
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
	if c.MaxSkew <= 0 {
		c.MaxSkew = DefaultMaxSkew
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

	mu         sync.Mutex
	cookie     crypto.Cookie
	st         Status
	regRetried bool // a challenge was answered in this register round
	pending    map[uint64]*pending
	reports    []wire.Report // sent since the last report challenge
}

// pending is a Connect waiting for its reply.
type pending struct {
	msg     wire.Connect
	retried bool // a challenge was answered in this round
	done    chan result
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
		seen:    replay.New(2*cfg.MaxSkew, 1<<14),
		kick:    make(chan struct{}, 1),
		regd:    make(chan struct{}, 1),
		pending: map[uint64]*pending{},
	}
	c.st.Server, c.st.ServerKey = cfg.Server, cfg.ServerKey
	return c, nil
}

// send seals body to the server and sends it.
func (c *Client) send(body wire.Body) error {
	b := wire.SealFrame(make([]byte, 0, 512), c.me, &c.shared, wire.Message{Time: c.cfg.Now().UnixMilli(), Body: body})
	if err := c.cfg.Send(b, c.cfg.Server); err != nil {
		return fmt.Errorf("send to rendezvous %s: %w", c.cfg.Server, err)
	}
	return nil
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

func randomTxID() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return binary.BigEndian.Uint64(b[:])
}
