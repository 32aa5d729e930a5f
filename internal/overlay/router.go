package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/keymesh/keymesh/internal/crypto"
)

// Transport carries packets between peers: node.Node is one (the package
// does not import node, which sits beside it).
type Transport interface {
	OverlayAddr() netip.Addr
	// SendPacket sends pkt to the owner of dst over a live session. Without
	// one its error has a method NoSession() bool that returns true
	// (node.ErrNoSession); when pkt does not fit a datagram, a method
	// MaxPacket() int with the limit (*node.TooBigError).
	SendPacket(dst netip.Addr, pkt []byte) error
	// Connect makes a session with peer (an overlay address here).
	Connect(ctx context.Context, peer string) error
	// HandlePackets sets the receiver of the packets peers send: from is
	// the sending peer's own overlay address (from its key); nil stops.
	HandlePackets(func(from netip.Addr, pkt []byte))
}

// noSession and tooBig are the Transport's errors, matched by method.
type (
	noSession interface{ NoSession() bool }
	tooBig    interface{ MaxPacket() int }
)

// Policy decides whether a peer may open a flow to this one: src is the
// peer's overlay address (already checked against its key) and port, dst
// this peer's address and port, proto the IP protocol (ports are 0 for
// protocols other than TCP and UDP). Replies to flows this side opened are
// not judged. It is called for each inbound packet that is not such a
// reply, so it must be cheap.
type Policy func(src, dst netip.AddrPort, proto uint8) bool

// Defaults of Config.
const (
	DefaultMaxDials  = 16
	DefaultQueue     = 1024
	DefaultMaxFlows  = 65536
	DefaultFlowIdle  = 5 * time.Minute
	DefaultDialRetry = 5 * time.Second
	// offset is the headroom the router leaves in front of each packet for
	// the device (a Linux TUN with offloads needs 10 bytes of virtio header).
	offset = 16
)

// Config configures a Router.
type Config struct {
	// Device is the TUN device: tun.CreateTUN's, or netstack's. Required.
	Device tun.Device
	// Transport carries packets to peers. Required.
	Transport Transport
	// Policy judges the inbound flows; nil admits every flow from a peer
	// that has a session (the node's --allow list already chose those).
	Policy Policy
	// MaxDials bounds the sessions being set up at once for packets
	// without one; default DefaultMaxDials. Packets to further new
	// destinations are dropped (counted in NoSession) meanwhile.
	MaxDials int
	// DialRetry is how long a destination whose session setup failed is
	// left alone; default DefaultDialRetry.
	DialRetry time.Duration
	// Queue bounds the inbound packets waiting for the device; default
	// DefaultQueue. More are dropped and counted.
	Queue int
	// MaxFlows bounds the table of flows opened from this side (see
	// Policy); default DefaultMaxFlows.
	MaxFlows int
	// Logger defaults to a discarding logger; Now to time.Now.
	Logger *slog.Logger
	Now    func() time.Time
}

// Stats counts the router's packets.
type Stats struct {
	Sent     uint64 `json:"sent"`     // packets carried to peers
	Received uint64 `json:"received"` // packets from peers written to the device
	// Spoofed: inbound packets whose source is not the sending peer's own
	// overlay address.
	Spoofed uint64 `json:"spoofed"`
	// NotMine: inbound packets not addressed to this peer's overlay
	// address.
	NotMine uint64 `json:"not_mine"`
	// Refused: inbound packets the Policy refused.
	Refused uint64 `json:"refused"`
	// Malformed: packets (either way) that are not well-formed IPv6.
	Malformed uint64 `json:"malformed"`
	// NoSession: outbound packets dropped while their session was set up
	// or after it failed.
	NoSession uint64 `json:"no_session"`
	// TooBig: outbound packets larger than a datagram (answered with
	// ICMPv6 Packet Too Big).
	TooBig uint64 `json:"too_big"`
	// QueueFull: inbound packets dropped because the device queue was full.
	QueueFull uint64 `json:"queue_full"`
	// Local: outbound packets not for an overlay peer (e.g. the kernel's
	// neighbour discovery on a TUN).
	Local uint64 `json:"local"`
}

// Router moves packets between a device and the peers.
type Router struct {
	cfg   Config
	me    netip.Addr
	log   *slog.Logger
	flows *flows
	in    chan *[]byte // packets for the device, after offset bytes of headroom
	pool  sync.Pool    // of *[]byte with room for the largest packet (GRO coalesces into them)

	dmu     sync.Mutex
	dialing map[netip.Addr]bool
	failed  map[netip.Addr]time.Time

	sent, received, spoofed, notMine, refused, malformed atomic.Uint64
	noSession, tooBig, queueFull, local                  atomic.Uint64
	lastRefusalLog                                       atomic.Int64
}

// New makes a router; Run starts it.
func New(cfg Config) (*Router, error) {
	if cfg.Device == nil || cfg.Transport == nil {
		return nil, errors.New("overlay: Config.Device and Config.Transport are required")
	}
	if cfg.MaxDials <= 0 {
		cfg.MaxDials = DefaultMaxDials
	}
	if cfg.DialRetry <= 0 {
		cfg.DialRetry = DefaultDialRetry
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.MaxFlows <= 0 {
		cfg.MaxFlows = DefaultMaxFlows
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Router{
		cfg: cfg, me: cfg.Transport.OverlayAddr(), log: cfg.Logger,
		flows: newFlows(cfg.MaxFlows, DefaultFlowIdle),
		in:    make(chan *[]byte, cfg.Queue),
		pool: sync.Pool{New: func() any {
			b := make([]byte, 0, offset+65535)
			return &b
		}},
		dialing: map[netip.Addr]bool{},
		failed:  map[netip.Addr]time.Time{},
	}, nil
}

// Stats returns the counters so far.
func (r *Router) Stats() Stats {
	return Stats{
		Sent: r.sent.Load(), Received: r.received.Load(), Spoofed: r.spoofed.Load(),
		NotMine: r.notMine.Load(), Refused: r.refused.Load(), Malformed: r.malformed.Load(),
		NoSession: r.noSession.Load(), TooBig: r.tooBig.Load(), QueueFull: r.queueFull.Load(),
		Local: r.local.Load(),
	}
}

// Run carries packets until ctx ends or the device fails, then closes the
// device. It takes over the transport's packet handler.
func (r *Router) Run(ctx context.Context) error {
	r.cfg.Transport.HandlePackets(r.receive)
	defer r.cfg.Transport.HandlePackets(nil)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	closeDev := sync.OnceFunc(func() { r.cfg.Device.Close() })
	defer closeDev()
	defer context.AfterFunc(ctx, closeDev)()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.writeLoop(ctx)
	}()
	err := r.readLoop(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// readLoop sends the device's packets to their peers.
func (r *Router) readLoop(ctx context.Context) error {
	batch := max(r.cfg.Device.BatchSize(), 1)
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, offset+65535)
	}
	sizes := make([]int, batch)
	// Read until the device fails or closes (Run closes it when ctx ends),
	// not merely until ctx ends: a userspace stack blocks its writers
	// (a connection being closed, holding its locks) until its packets
	// are read, and closing the stack waits for those locks.
	for {
		n, err := r.cfg.Device.Read(bufs, sizes, offset)
		for i := range n {
			if ctx.Err() == nil {
				r.send(ctx, bufs[i][offset:offset+sizes[i]])
			}
		}
		if err != nil {
			if errors.Is(err, tun.ErrTooManySegments) {
				continue
			}
			return fmt.Errorf("overlay: read device: %w", err)
		}
	}
}

// send carries one packet from the device to its peer.
func (r *Router) send(ctx context.Context, pkt []byte) {
	h, ok := Parse(pkt)
	if !ok {
		r.malformed.Add(1)
		return
	}
	if h.Src != r.me || !crypto.IsOverlay(h.Dst) || h.Dst == r.me {
		r.local.Add(1)
		return
	}
	if h.Proto == ProtoTCP || h.Proto == ProtoUDP {
		r.flows.out(flowKey{proto: h.Proto, local: h.SrcPort, remote: h.DstAddrPort()}, r.cfg.Now())
	}
	err := r.cfg.Transport.SendPacket(h.Dst, pkt)
	var ns noSession
	var big tooBig
	switch {
	case err == nil:
		r.sent.Add(1)
	case errors.As(err, &ns) && ns.NoSession():
		r.noSession.Add(1)
		r.connect(ctx, h.Dst)
	case errors.As(err, &big):
		r.tooBig.Add(1)
		if ptb := PacketTooBig(pkt, min(big.MaxPacket(), MinMTU)); ptb != nil {
			buf := r.pool.Get().(*[]byte)
			*buf = append((*buf)[:offset], ptb...)
			r.enqueue(buf)
		}
	default:
		r.noSession.Add(1)
		r.log.Debug("overlay: send failed", "dst", h.Dst, "err", err)
	}
}

// connect sets up a session with the owner of dst in the background,
// unless one is being set up, MaxDials are, or the last try failed less
// than DialRetry ago.
func (r *Router) connect(ctx context.Context, dst netip.Addr) {
	now := r.cfg.Now()
	r.dmu.Lock()
	if r.dialing[dst] || len(r.dialing) >= r.cfg.MaxDials {
		r.dmu.Unlock()
		return
	}
	if t, ok := r.failed[dst]; ok {
		if now.Sub(t) < r.cfg.DialRetry {
			r.dmu.Unlock()
			return
		}
		delete(r.failed, dst)
	}
	r.dialing[dst] = true
	r.dmu.Unlock()
	go func() {
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := r.cfg.Transport.Connect(dctx, dst.String())
		cancel()
		r.dmu.Lock()
		delete(r.dialing, dst)
		if err != nil {
			if len(r.failed) >= r.cfg.MaxFlows {
				clear(r.failed)
			}
			r.failed[dst] = r.cfg.Now()
		}
		r.dmu.Unlock()
		if err != nil {
			r.log.Info("overlay: no session for packets", "dst", dst, "err", err)
		}
	}()
}

// receive checks one packet a peer sent and queues it for the device.
func (r *Router) receive(from netip.Addr, pkt []byte) {
	h, ok := Parse(pkt)
	if !ok {
		r.malformed.Add(1)
		return
	}
	if h.Src != from {
		r.spoofed.Add(1)
		r.log.Debug("overlay: dropped a packet with a forged source", "peer", from, "src", h.Src)
		return
	}
	if h.Dst != r.me {
		r.notMine.Add(1)
		return
	}
	if p := r.cfg.Policy; p != nil {
		reply := (h.Proto == ProtoTCP || h.Proto == ProtoUDP) &&
			r.flows.reply(flowKey{proto: h.Proto, local: h.DstPort, remote: h.SrcAddrPort()}, r.cfg.Now())
		if !reply && !p(h.SrcAddrPort(), h.DstAddrPort(), h.Proto) {
			r.refused.Add(1)
			r.logRefusal(h)
			return
		}
	}
	buf := r.pool.Get().(*[]byte)
	*buf = append((*buf)[:offset], pkt...)
	if r.enqueue(buf) {
		r.received.Add(1)
	}
}

// logRefusal logs a refused packet, at most once a second.
func (r *Router) logRefusal(h Header) {
	now := r.cfg.Now().UnixNano()
	last := r.lastRefusalLog.Load()
	if now-last < int64(time.Second) || !r.lastRefusalLog.CompareAndSwap(last, now) {
		return
	}
	r.log.Info("overlay: refused a flow", "src", h.SrcAddrPort(), "dst", h.DstAddrPort(), "proto", h.Proto, "refused_so_far", r.refused.Load())
}

// enqueue queues buf (a packet after offset bytes of headroom, from the
// pool) for the device, or drops it when the queue is full.
func (r *Router) enqueue(buf *[]byte) bool {
	select {
	case r.in <- buf:
		return true
	default:
		r.queueFull.Add(1)
		r.pool.Put(buf)
		return false
	}
}

// writeLoop writes the queued packets to the device, in batches of what
// has queued up (the device may coalesce them, GRO).
func (r *Router) writeLoop(ctx context.Context) {
	batch := max(r.cfg.Device.BatchSize(), 1) * 8
	bufs := make([][]byte, 0, batch)
	held := make([]*[]byte, 0, batch)
	for {
		bufs, held = bufs[:0], held[:0]
		select {
		case <-ctx.Done():
			return
		case p := <-r.in:
			bufs, held = append(bufs, *p), append(held, p)
		}
	more:
		for len(bufs) < batch {
			select {
			case p := <-r.in:
				bufs, held = append(bufs, *p), append(held, p)
			default:
				break more
			}
		}
		if _, err := r.cfg.Device.Write(bufs, offset); err != nil && ctx.Err() == nil {
			r.log.Debug("overlay: write device", "err", err)
		}
		for _, p := range held {
			r.pool.Put(p)
		}
	}
}
