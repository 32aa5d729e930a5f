package pathsock

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/nat"
)

// readBufSize leaves room to notice oversized datagrams.
const readBufSize = 2048

// pingRetry is how often Ping probes again while unanswered.
const pingRetry = 500 * time.Millisecond

// maintenanceTick is the period of the path upkeep loop.
const maintenanceTick = 100 * time.Millisecond

// inPacket is a received QUIC packet waiting for ReadFrom.
type inPacket struct {
	bp   *[]byte
	off  int
	n    int
	from *net.UDPAddr
}

// Sock is the path layer: the peer's UDP socket and every peer's path. It
// implements net.PacketConn for quic-go (see ReadFrom and WriteTo).
type Sock struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	id    *crypto.Identity
	me    crypto.PeerID
	myTag uint64
	vaddr *net.UDPAddr
	// pingRetry is how often Ping probes again (const pingRetry; tests
	// change it).
	pingRetry time.Duration

	connMu   sync.Mutex              // serialises socket replacement (writers of conn)
	conn     atomic.Pointer[connBox] // read without the lock
	gso, gro atomic.Bool             // the socket's offloads
	out      chan outPacket
	lastHeal atomic.Int64

	in        chan inPacket
	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	dlMu     sync.Mutex // guards deadline and dlWake
	deadline time.Time
	dlWake   chan struct{}

	bufs sync.Pool

	mu     sync.RWMutex // guards byAddr, byTag and stash
	byAddr map[netip.Addr]*peer
	byTag  map[uint64]*peer
	stash  []stashed

	keys keyCache

	pendMu  sync.Mutex // guards pending and every probeTx in it
	pending map[uint64]*probeTx

	relay    relays
	local    localState
	updClock atomic.Int64 // last PathUpdate time sent

	extraMu sync.Mutex // guards extras
	extras  map[*extra]struct{}
	natSeen atomic.Uint32 // last NAT behaviour seen, +1 (0: none yet)
	sprays  atomic.Int32  // easy-side birthday sprays running
	lostAt  atomic.Int64  // unix ns of the last reaction to a lost path (pathLost)

	guard guard

	stats Stats
}

// Stats counts what the layer did; read with Sock.Stats.
type Stats struct {
	DirectSent, RelaySent, Dropped, Received, QueueFull, Stashed atomic.Uint64
	// BirthdaySockets counts extra sockets opened as the hard side of
	// birthday punching; BirthdayProbes the probes sprayed as the easy side.
	BirthdaySockets, BirthdayProbes atomic.Uint64
	// Unproven counts probes sent to candidates that have not answered
	// yet; Refused those the reflection limits held back (guard.go).
	Unproven, Refused atomic.Uint64
	// RepliesLimited counts direct Probes left unanswered by the
	// per-source limit; Stale those refused as too old or too new.
	RepliesLimited, Stale atomic.Uint64
	// Resent counts packets sent again when a path came back (resend.go).
	Resent atomic.Uint64
}

// New opens (or adopts) the socket and starts the layer.
func New(cfg Config) (*Sock, error) {
	s, err := newSock(cfg)
	if err != nil {
		return nil, err
	}
	s.wg.Add(3)
	go s.readLoop()
	go s.writeLoop()
	go s.maintain()
	return s, nil
}

// newSock makes the layer without starting its goroutines (the fuzz target
// drives handle by itself).
func newSock(cfg Config) (*Sock, error) {
	if cfg.Identity == nil {
		return nil, ErrNoIdentity
	}
	cfg.setDefaults()
	s := &Sock{
		cfg:       cfg,
		log:       cfg.Logger,
		now:       cfg.Now,
		id:        cfg.Identity,
		me:        cfg.Identity.ID(),
		myTag:     cfg.Identity.ID().Tag(),
		pingRetry: pingRetry,
		vaddr:     VirtualAddr(cfg.Identity.ID()),
		in:        make(chan inPacket, cfg.QueueLen),
		out:       make(chan outPacket, outQueue),
		closed:    make(chan struct{}),
		dlWake:    make(chan struct{}),
		byAddr:    map[netip.Addr]*peer{},
		byTag:     map[uint64]*peer{},
		pending:   map[uint64]*probeTx{},
		extras:    map[*extra]struct{}{},
	}
	s.guard = newGuard(cfg.Limits, cfg.Now())
	s.bufs.New = func() any { b := make([]byte, readBufSize); return &b }
	s.keys.init(cfg.Identity)
	conn := cfg.Conn
	if conn == nil {
		var err error
		conn, err = listen(cfg.ListenAddr)
		if err != nil {
			return nil, err
		}
	}
	if s.cfg.NAT == nil {
		s.cfg.NAT = s.NATBehaviour
	}
	if s.cfg.ListenExtra == nil {
		s.cfg.ListenExtra = s.listenExtraDefault
	}
	s.setConn(conn)
	s.refreshLocal() // initial candidates; no change callback yet
	return s, nil
}

func listen(addr string) (*net.UDPConn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", addr, err)
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	// Large buffers matter at QUIC speeds; failures only cost speed.
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	return c, nil
}

// PacketConn is what the layer sends and receives on: a UDP socket, or a
// stream tunnel (streamrelay.Tunnel) where UDP is blocked.
type PacketConn interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
	LocalAddr() net.Addr
	Close() error
	SetReadBuffer(bytes int) error
	SetWriteBuffer(bytes int) error
}

// connBox holds the current socket; udp is set when it is a real UDP
// socket (offloads and rebinding need one).
type connBox struct {
	PacketConn
	udp *net.UDPConn
}

// setConn installs a socket and its offloads.
func (s *Sock) setConn(c PacketConn) {
	box := &connBox{PacketConn: c}
	var gso, gro bool
	if u, ok := c.(*net.UDPConn); ok {
		box.udp = u
		gso, gro = enableOffload(u)
	}
	s.gso.Store(gso)
	s.gro.Store(gro)
	s.conn.Store(box)
}

// UseConn replaces the socket with c (a stream tunnel where UDP is
// blocked); the layer re-registers and tells its peers, as after Rebind.
// The layer owns c from now on.
func (s *Sock) UseConn(c PacketConn) error {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.isClosed() {
		return net.ErrClosed
	}
	old := s.conn.Load()
	s.setConn(c)
	old.Close()
	s.log.Info("socket replaced", "addr", c.LocalAddr().String())
	s.refreshLocal()
	s.localChanged("socket replaced")
	// What went out since each peer was last heard from was likely lost
	// with the old socket (UDP blocked, or back from a tunnel): it goes
	// again on the new one at once, so that QUIC's probe timeout backoff
	// ends within a round trip (resend.go).
	for _, pr := range s.peers() {
		s.resend(pr, unixTime(pr.lastSeen.Load()))
	}
	return nil
}

// Tunneled reports whether the layer runs over a stream tunnel rather than
// its own UDP socket.
func (s *Sock) Tunneled() bool { return s.conn.Load().udp == nil }

// ID returns this peer's ID.
func (s *Sock) ID() crypto.PeerID { return s.me }

// LocalAddrPort returns the real socket's bound address.
func (s *Sock) LocalAddrPort() netip.AddrPort {
	ua, _ := s.conn.Load().LocalAddr().(*net.UDPAddr)
	if ua == nil {
		return netip.AddrPort{}
	}
	return ua.AddrPort()
}

// Close stops the layer and closes the socket.
func (s *Sock) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		s.closeExtras()
		s.connMu.Lock()
		err = s.conn.Load().Close()
		s.connMu.Unlock()
		s.wg.Wait()
		s.pendMu.Lock()
		for tx, p := range s.pending {
			delete(s.pending, tx)
			if p.done != nil && !p.fired {
				p.fired = true
				close(p.done)
			}
		}
		s.pendMu.Unlock()
	})
	return err
}

func (s *Sock) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// Rebind replaces the socket with a new one on addr (":0" picks a new
// port, "" keeps the current address). Sessions continue: the layer
// re-registers, re-binds the relay and tells every peer its new address.
// Besides healing a broken socket, it simulates a NAT rebinding in tests.
func (s *Sock) Rebind(addr string) error {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.isClosed() {
		return net.ErrClosed
	}
	old := s.conn.Load()
	if old.udp == nil {
		return errors.New("pathsock: cannot rebind a stream tunnel")
	}
	if addr == "" {
		addr = old.LocalAddr().String()
		// Free the port first: the new socket takes the same one.
		old.Close()
	}
	c, err := listen(addr)
	if err != nil && addr == old.LocalAddr().String() {
		// The port was taken meanwhile: any port on the same address.
		host, _, _ := net.SplitHostPort(addr)
		s.log.Warn("could not reopen the socket on its port; taking a new one", "addr", addr, "err", err)
		c, err = listen(net.JoinHostPort(host, "0"))
	}
	if err != nil {
		return err
	}
	s.setConn(c)
	old.Close()
	s.log.Info("socket rebound", "addr", c.LocalAddr().String())
	s.refreshLocal()
	s.localChanged("socket rebound")
	return nil
}

// heal recreates the socket on the same port after a send failed in a way
// that says the socket's address is gone. At most once a second.
func (s *Sock) heal(err error) {
	if s.Tunneled() {
		return
	}
	if !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.EBADF) && !errors.Is(err, syscall.EINVAL) {
		return
	}
	now := s.now().UnixNano()
	last := s.lastHeal.Load()
	if now-last < int64(time.Second) || !s.lastHeal.CompareAndSwap(last, now) {
		return
	}
	go func() {
		if err := s.Rebind(""); err != nil && !s.isClosed() {
			s.log.Warn("recreating socket failed", "err", err)
		}
	}()
}

// WriteRaw sends b as it is to addr from the layer's socket (the rendezvous
// client's and the STUN client's Send).
func (s *Sock) WriteRaw(b []byte, to netip.AddrPort) error {
	_, err := s.conn.Load().WriteToUDPAddrPort(b, to)
	if err != nil {
		if s.isClosed() {
			return net.ErrClosed
		}
		s.heal(err)
	}
	return err
}

// send writes a frame, counting and healing failures; it never reports an
// error (UDP is lossy anyway, and QUIC kills a connection on write errors).
func (s *Sock) send(b []byte, to netip.AddrPort) bool {
	if _, err := s.conn.Load().WriteToUDPAddrPort(b, to); err != nil {
		s.stats.Dropped.Add(1)
		if !s.isClosed() {
			s.heal(err)
		}
		return false
	}
	return true
}

// dropDirect asks the test hook about a direct frame.
func (s *Sock) dropDirect(remote netip.AddrPort) bool {
	return s.cfg.DropDirect != nil && s.cfg.DropDirect(remote)
}

func (s *Sock) getBuf() *[]byte { return s.bufs.Get().(*[]byte) }

func (s *Sock) putBuf(bp *[]byte) {
	*bp = (*bp)[:cap(*bp)]
	s.bufs.Put(bp)
}

// maintain runs the timers: probes, liveness, relay binding, address
// polling, announcements.
func (s *Sock) maintain() {
	defer s.wg.Done()
	t := time.NewTicker(maintenanceTick)
	defer t.Stop()
	lastPoll := time.Time{}
	for {
		select {
		case <-s.closed:
			return
		case <-t.C:
		}
		now := s.now()
		s.tickPeers(now)
		s.tickRelays(now)
		if now.Sub(lastPoll) >= nat.AddrPollInterval {
			lastPoll = now
			if s.refreshLocal() {
				s.localChanged("interface addresses changed")
			}
			s.expirePending(now)
			s.expireStash(now)
		}
		s.tickAnnounce(now)
	}
}

// noDirect reports whether direct paths are off: by configuration, or
// because the layer runs in a stream tunnel (its "direct" paths would
// really pass through the stream relay).
func (s *Sock) noDirect() bool { return s.cfg.NoDirect || s.Tunneled() }
