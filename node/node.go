package node

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/nat"
	"github.com/keymesh/keymesh/internal/pathsock"
	"github.com/keymesh/keymesh/internal/policy"
	"github.com/keymesh/keymesh/internal/rzclient"
	"github.com/keymesh/keymesh/internal/streamclient"
	"github.com/keymesh/keymesh/internal/wire"
)

// Timing of New and of sessions.
const (
	// DefaultRegisterTimeout bounds New's wait for the first registration
	// when ctx has no deadline.
	DefaultRegisterTimeout = 15 * time.Second
	// ticketWait bounds New's wait for a relay ticket once registered.
	ticketWait = 3 * time.Second
	// KeepAlivePeriod and MaxIdleTimeout of sessions: the idle timeout
	// outlasts a path switch (at most about 2 s) many times over. A side
	// that has heard nothing for KeepAlivePeriod sends a PING (quic-go
	// counts from the last packet received, so a busy session sends none).
	// That PING is what moves a receiving peer's flow to a surviving
	// region when its home region dies behind a managed front door: until
	// it sends, the survivor's packets cannot reach it through its NAT
	// (`loadtest regionkill`). It costs an idle session one small packet a
	// second each way.
	KeepAlivePeriod = time.Second
	MaxIdleTimeout  = 30 * time.Second
	// headerTimeout bounds the wait for a new stream's port header.
	headerTimeout = 10 * time.Second
)

// Node is a running keymesh peer. Its methods are safe for concurrent use.
type Node struct {
	stream  streamclient.Target // the stream relay fallback; zero when none
	udpWait time.Duration
	fb      fallback // with a stream relay: leaving UDP and returning (tunnel.go)
	log     *slog.Logger
	id      *crypto.Identity
	me      crypto.PeerID
	server  string
	policy  *policy.Policy

	sock      *pathsock.Sock
	sockReady atomic.Pointer[pathsock.Sock] // sock, for its own goroutines' callbacks
	rz        *rzclient.Client
	stun      *nat.STUNClient
	srv       netip.AddrPort
	tr        *quic.Transport
	ql        *quic.Listener
	qconf     *quic.Config
	stls      *tlsConfigs

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	regs       atomic.Int64 // Registered messages so far
	changeMark atomic.Int64 // regs when the path layer last asked to re-register; -1 before
	regCh      chan struct{}
	closeOnce  sync.Once
	mu         sync.Mutex
	conns      map[crypto.PeerID]*quic.Conn
	byAddr     map[netip.Addr]crypto.PeerID // overlay address of each peer in conns
	packets    atomic.Pointer[PacketHandler]
	dialing    map[crypto.PeerID]*dialCall
	listeners  map[uint16]*listener
	closed     bool
	closeError error

	// Outcome reports (report.go).
	noReports bool
	rmu       sync.Mutex
	watched   map[crypto.PeerID]*traversal
	reported  map[crypto.PeerID]time.Time // when each recent report went
	rwake     chan struct{}
}

// New starts a node: it opens the socket, registers with the rendezvous
// server and binds a relay. It returns once registered (and, when the
// server lists relays, once a relay ticket is published), or fails when ctx
// ends first (DefaultRegisterTimeout when ctx has no deadline).
func New(ctx context.Context, cfg Config) (*Node, error) {
	return newNode(ctx, cfg, nil)
}

// newNode is New with a hook on the path layer's configuration and hooks
// on the node before it starts (tests).
func newNode(ctx context.Context, cfg Config, pathHook func(*pathsock.Config), hooks ...func(*Node)) (*Node, error) {
	id, err := cfg.identity()
	if err != nil {
		return nil, err
	}
	if cfg.Server == "" {
		return nil, fmt.Errorf("node: Config.Server is required: the rendezvous connect string host:port#<server-id>")
	}
	serverAddr, serverKey, err := rzclient.ParseServer(cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pol, err := cfg.policy(log)
	if err != nil {
		return nil, err
	}
	nctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		log: log, id: id, me: id.ID(), server: cfg.Server, policy: pol,
		ctx: nctx, cancel: cancel,
		regCh:     make(chan struct{}, 1),
		conns:     map[crypto.PeerID]*quic.Conn{},
		byAddr:    map[netip.Addr]crypto.PeerID{},
		dialing:   map[crypto.PeerID]*dialCall{},
		listeners: map[uint16]*listener{},
		noReports: cfg.NoReports,
		watched:   map[crypto.PeerID]*traversal{},
		reported:  map[crypto.PeerID]time.Time{},
		rwake:     make(chan struct{}, 1),
	}
	n.changeMark.Store(-1)
	if cfg.StreamRelay != "" {
		if n.stream, err = streamclient.ParseTarget(cfg.StreamRelay); err != nil {
			cancel()
			return nil, fmt.Errorf("node: %w", err)
		}
		n.udpWait = cfg.UDPTimeout
		if n.udpWait <= 0 {
			n.udpWait = DefaultUDPTimeout
		}
	}
	rcfg := rzclient.Config{
		Identity:  id,
		Server:    serverAddr,
		ServerKey: serverKey,
		Send:      func(b []byte, to netip.AddrPort) error { return n.sock.WriteRaw(b, to) },
		Candidates: func() []netip.AddrPort {
			return n.sock.Candidates()
		},
		Tickets:      func() [][]byte { return n.sock.Tickets() },
		NAT:          n.natBehaviour,
		AllowAny:     pol.AnyPeer(),
		Allowed:      pol.Peers(),
		Token:        cfg.JoinToken,
		OnPunch:      n.onPunch,
		OnRegistered: n.onRegistered,
		Keepalive:    keepalive(cfg.RendezvousKeepalive),
		Logger:       log.With("part", "rendezvous"),
		Seen:         rzclient.NewReplayCache(0),
	}
	if n.stream.URL != "" {
		rcfg.OnAsk, rcfg.OnAnswer = n.onAsk, n.onAnswer
	}
	n.rz, err = rzclient.New(rcfg)
	if err == nil && n.stream.URL != "" {
		err = n.initFallback(rcfg)
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("node: %w", err)
	}
	n.srv = serverAddr
	n.stun, _ = nat.NewSTUNClient(func(b []byte, to netip.AddrPort) error { return n.sock.WriteRaw(b, to) }) // fails only without a send func
	pcfg := pathsock.Config{
		Identity:      id,
		ListenAddr:    cfg.ListenAddr,
		ServerKey:     serverKey,
		OnServerFrame: n.rz.HandleFrame,
		OnSTUN:        func(b []byte, from netip.AddrPort) { n.stun.Handle(b, from) },
		OnLocalChange: n.reregister,
		NoDirect:      cfg.NoDirect,
		NAT:           n.natBehaviour,
		Limits: pathsock.Limits{
			CandidateProbes: cfg.Reflection.CandidateProbes, PeerProbes: cfg.Reflection.PeerProbes,
			UnprovenRate: cfg.Reflection.Rate, UnprovenBurst: cfg.Reflection.Burst,
			DestRate: cfg.Reflection.DestRate, DestBurst: cfg.Reflection.DestBurst,
			ReplyRate: cfg.Reflection.ReplyRate, ReplyBurst: cfg.Reflection.ReplyBurst,
			MaxBirthdaySockets: cfg.Reflection.MaxBirthdaySockets, MaxSprays: cfg.Reflection.MaxSprays,
		},
		Logger: log.With("part", "path"),
	}
	if pathHook != nil {
		pathHook(&pcfg)
	}
	for _, h := range hooks {
		h(n)
	}
	n.sock, err = pathsock.New(pcfg)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("node: %w", err)
	}
	n.sockReady.Store(n.sock)
	if err := n.startQUIC(); err != nil {
		n.sock.Close()
		cancel()
		return nil, fmt.Errorf("node: %w", err)
	}
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		n.rz.Run(nctx)
	}()
	go n.reportLoop()
	if err := n.waitRegistered(ctx); err != nil {
		n.Close()
		return nil, err
	}
	if n.stream.URL != "" {
		// From now on: leave UDP when it stops answering, come back
		// when it answers again.
		n.wg.Add(1)
		go n.watchUDP()
	}
	log.Info("node up", "id", n.me.String(), "overlay", n.me.OverlayAddr().String(), "local", n.sock.LocalAddrPort().String())
	return n, nil
}

// waitRegistered waits for the first Registered, then for a relay ticket
// and the registration that publishes it.
func (n *Node) waitRegistered(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultRegisterTimeout)
		defer cancel()
	}
	if n.stream.URL != "" {
		udp, cancel := context.WithTimeout(ctx, n.udpWait)
		select {
		case <-n.regCh:
			cancel()
			goto registered
		case <-udp.Done():
			cancel()
		}
		if ctx.Err() == nil {
			n.log.Warn("no answer over UDP: trying the TLS stream relay", "waited", n.udpWait, "relay", n.stream.URL)
			if err := n.useTunnel(ctx); err != nil {
				return fmt.Errorf("node: %w %s: no answer over UDP, and the stream relay failed: %w", ErrNotRegistered, n.server, err)
			}
		}
	}
	select {
	case <-n.regCh:
	case <-ctx.Done():
		msg := n.rz.Status().LastError
		if msg == "" {
			msg = "no answer (is the server running and reachable over UDP, and is the server ID in the connect string right?)"
		}
		return fmt.Errorf("node: %w %s: %s: %w", ErrNotRegistered, n.server, msg, ctx.Err())
	}
registered:
	if len(n.rz.Status().Relays) == 0 {
		return nil
	}
	wait, cancel := context.WithTimeout(ctx, ticketWait)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for len(n.sock.Tickets()) == 0 {
		select {
		case <-wait.Done():
			n.log.Warn("no relay ticket yet: peers cannot reach this node through the relay until one is bound", "relays", n.rz.Status().Relays)
			return nil
		case <-t.C:
		}
	}
	// The ticket triggered a re-registration; wait for its answer.
	for m := n.changeMark.Load(); m < 0 || n.regs.Load() <= m; m = n.changeMark.Load() {
		select {
		case <-wait.Done():
			return nil
		case <-t.C:
		}
	}
	return nil
}

// reregister re-registers after the path layer's addresses or tickets
// changed.
func (n *Node) reregister() {
	n.changeMark.Store(n.regs.Load())
	n.rz.Reregister()
}

func (n *Node) onPunch(p wire.Punch) {
	now := time.Now()
	if err := n.sock.AddPeer(p.Peer, time.UnixMilli(p.Start)); err != nil {
		n.log.Debug("punch from unusable peer", "peer", p.Peer.ID.Short(), "err", err)
		return
	}
	n.watchTraversal(p.Peer.ID, p.Peer.NAT, false, now)
	n.log.Debug("punch", "peer", p.Peer.ID.Short())
}

func (n *Node) onRegistered(r wire.Registered) {
	n.sock.SetRegistered(r.Reflexive, r.Relays)
	n.regs.Add(1)
	select {
	case n.regCh <- struct{}{}:
	default:
	}
}

func (n *Node) startQUIC() error {
	seed := n.id.Seed()
	key := quic.StatelessResetKey(sha256.Sum256(append([]byte("keymesh quic stateless reset\x00"), seed...)))
	n.tr = &quic.Transport{Conn: n.sock, StatelessResetKey: &key}
	n.qconf = &quic.Config{
		InitialPacketSize:       pathsock.MaxPayload,
		DisablePathMTUDiscovery: true,
		KeepAlivePeriod:         KeepAlivePeriod,
		MaxIdleTimeout:          MaxIdleTimeout,
		HandshakeIdleTimeout:    10 * time.Second,
		MaxIncomingStreams:      1024,
		MaxIncomingUniStreams:   1, // the acceptor's confirmation (see confirm)
		EnableDatagrams:         true,
	}
	var err error
	n.stls, err = newTLSConfigs(n.id, n.acceptPeer)
	if err != nil {
		return err
	}
	n.ql, err = n.tr.Listen(n.stls.server, n.qconf)
	if err != nil {
		return fmt.Errorf("quic listen: %w", err)
	}
	n.listeners[0] = newListener(n, 0)
	n.wg.Add(1)
	go n.acceptLoop()
	return nil
}

// acceptPeer is the access check of incoming sessions: a peer that no
// rule names is refused (logged and counted by the policy).
func (n *Node) acceptPeer(id crypto.PeerID) error {
	if n.policy.AllowPeer(id) {
		return nil
	}
	return fmt.Errorf("peer %s is not allowed: start the daemon with --allow %s or --allow-any", id, id)
}

// Policy returns the node's allow policy, which the overlay data path asks
// about each new flow and which exports the refusal counter.
func (n *Node) Policy() *policy.Policy { return n.policy }

// ID returns the node's peer ID.
func (n *Node) ID() string { return n.me.String() }

// OverlayAddr returns the node's overlay IPv6 address.
func (n *Node) OverlayAddr() netip.Addr { return n.me.OverlayAddr() }

// Close ends every session and stops the node.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		// Report the traversals still watched while the socket is open.
		if !n.noReports {
			n.pollTraversals(time.Now(), true)
		}
		n.mu.Lock()
		n.closed = true
		conns := make([]*quic.Conn, 0, len(n.conns))
		for _, c := range n.conns {
			conns = append(conns, c)
		}
		ls := make([]*listener, 0, len(n.listeners))
		for _, l := range n.listeners {
			ls = append(ls, l)
		}
		n.mu.Unlock()
		for _, l := range ls {
			l.Close()
		}
		for _, c := range conns {
			c.CloseWithError(0, "node closing")
		}
		n.cancel()
		n.ql.Close()
		n.tr.Close()
		n.closeError = n.sock.Close()
		n.closeFallback()
		n.wg.Wait()
	})
	return n.closeError
}

// STUN asks the rendezvous server, over the node's own socket, for the
// node's public (reflexive) address: the address other peers see.
func (n *Node) STUN(ctx context.Context) (netip.AddrPort, error) {
	a, err := n.stun.Query(ctx, n.srv)
	if err != nil {
		return a, fmt.Errorf("node: %w", err)
	}
	return a, nil
}

// keepalive maps Config.RendezvousKeepalive to rzclient's (0: none).
func keepalive(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return rzclient.DefaultKeepalive
	case d < 0:
		return 0
	}
	return d
}
