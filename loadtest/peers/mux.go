package peers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// The multiplexed population (--per-source above 1): many simulated peers
// share one UDP socket and loopback source address, so that a million
// peers fit in a few thousand descriptors and goroutines. Each peer is its
// own identity with its own registration, refreshed on its own schedule;
// the server sees perSource peers behind each source address, as behind a
// NAT. Every server answer is sealed to one peer's key, and a frame does not
// name its recipient: the socket tries the peers that sent last first (an
// answer follows its request), then every peer of the socket (a Punch).

// muxPeer is one simulated peer: its ID and the key it shares with the
// server, and when it last heard Registered (Unix ns, 0: never).
type muxPeer struct {
	id     crypto.PeerID
	shared [32]byte
	regd   atomic.Int64
}

// muxSalt is a recent request's salt, to match a CookieReply to it.
type muxSalt struct {
	salt [wire.SaltLen]byte
	peer int32
	typ  wire.MsgType
	tx   uint64
	to   crypto.PeerID
}

const (
	muxRecent = 16 // peers whose requests a socket tries first
	muxSalts  = 256
)

// muxSock is one socket and the peers behind it.
type muxSock struct {
	pop   *muxPop
	conn  *net.UDPConn
	local netip.AddrPort
	peers []muxPeer // a window of pop.peers
	base  int       // global index of peers[0]

	mu       sync.Mutex
	cookie   crypto.Cookie
	salts    [muxSalts]muxSalt
	saltNext int
	recent   [muxRecent]int32
	recNext  int
	due      []muxDue // refreshes, in time order
	wake     chan struct{}
}

// muxDue is a refresh to send at a time (Unix ns).
type muxDue struct {
	peer int32
	at   int64
}

// muxPop is the whole multiplexed population.
type muxPop struct {
	server    peersServer
	peers     []muxPeer
	socks     []*muxSock
	cnt       *peersCounters
	refresh   atomic.Int64 // ns, from the server's Registered
	firstRegs atomic.Int64 // peers registered at least once

	// inflight holds the registration phase's peers sent but not yet
	// registered, with when they were last sent; free releases a place.
	inflightMu sync.Mutex
	inflight   map[int32]int64
	free       chan struct{}

	pendMu  sync.Mutex
	pending map[uint64]chan wire.ConnectReply
}

// newMuxPopulation makes n peers behind n/perSource sockets (one loopback
// source address each for a loopback IPv4 server) and starts the sockets'
// readers. Making the identities costs an Ed25519 key and an X25519 each.
func newMuxPopulation(ctx context.Context, n, perSource int, srv peersServer, ids *idPool, cnt *peersCounters, progress io.Writer) (*muxPop, error) {
	nsock := (n + perSource - 1) / perSource
	if err := peersRaiseNoFile(nsock); err != nil {
		return nil, err
	}
	p := &muxPop{server: srv, peers: make([]muxPeer, n), cnt: cnt, pending: map[uint64]chan wire.ConnectReply{}}
	p.refresh.Store(int64(20 * time.Second))
	if err := p.identities(ctx, ids, progress); err != nil {
		return nil, err
	}
	for s := 0; s < nsock; s++ {
		src := netip.AddrPortFrom(peerSource(s), 0)
		if !srv.addr.Addr().IsLoopback() || srv.addr.Addr().Is6() {
			src = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
		}
		conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(src))
		if err != nil {
			p.close()
			return nil, fmt.Errorf("socket %d on %v: %w", s, src, err)
		}
		_ = conn.SetReadBuffer(1 << 20)
		lo, hi := s*perSource, min(n, (s+1)*perSource)
		p.socks = append(p.socks, &muxSock{pop: p, conn: conn, local: conn.LocalAddr().(*net.UDPAddr).AddrPort(),
			peers: p.peers[lo:hi], base: lo, wake: make(chan struct{}, 1)})
	}
	for _, s := range p.socks {
		go s.read()
	}
	return p, nil
}

// idPool keeps the simulated peers' identities (their IDs and the keys
// they share with the server) across scenarios whose servers have one key
// (--rendezvous reuses its key file), so that a million are made once.
type idPool struct {
	server crypto.PeerID
	ids    []crypto.PeerID
	shared [][32]byte
}

// identities gives every peer an identity: from ids when it holds enough for
// this server, else new ones (an Ed25519 key and an X25519 each, on every
// core), which ids then keeps.
func (p *muxPop) identities(ctx context.Context, ids *idPool, progress io.Writer) error {
	n, srv := len(p.peers), p.server
	if ids != nil && ids.server == srv.key && len(ids.ids) >= n {
		for i := range p.peers {
			p.peers[i].id, p.peers[i].shared = ids.ids[i], ids.shared[i]
		}
		return nil
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, runtime.GOMAXPROCS(0))
	for range cap(errc) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				id, err := crypto.GenerateIdentity(nil)
				if err == nil {
					var k *[32]byte
					if k, err = id.SharedKey(srv.key); err == nil {
						p.peers[i].id, p.peers[i].shared = id.ID(), *k
					}
				}
				if err != nil {
					errc <- err
					return
				}
				if (i+1)%100000 == 0 {
					fmt.Fprintf(progress, "  %d identities\n", i+1)
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if ids != nil {
		ids.server, ids.ids, ids.shared = srv.key, make([]crypto.PeerID, n), make([][32]byte, n)
		for i := range p.peers {
			ids.ids[i], ids.shared[i] = p.peers[i].id, p.peers[i].shared
		}
	}
	return nil
}

func (p *muxPop) close() {
	for _, s := range p.socks {
		s.conn.Close()
	}
}

// sock returns the socket of global peer i and its index there.
func (p *muxPop) sock(i int) (*muxSock, int32) {
	per := len(p.socks[0].peers)
	return p.socks[i/per], int32(i % per)
}

// send seals body from peer i of s to the server.
func (s *muxSock) send(i int32, body wire.Body, tx uint64, to crypto.PeerID) {
	pe := &s.peers[i]
	plain := wire.AppendMessage(make([]byte, 0, 256), wire.Message{Time: time.Now().UnixMilli(), Body: body})
	s.mu.Lock()
	cookie := s.cookie
	s.mu.Unlock()
	b, salt := wire.SealRequest(make([]byte, 0, 384), pe.id, &pe.shared, plain, &cookie)
	s.mu.Lock()
	s.salts[s.saltNext] = muxSalt{salt: salt, peer: i, typ: body.Type(), tx: tx, to: to}
	s.saltNext = (s.saltNext + 1) % muxSalts
	s.recent[s.recNext] = i
	s.recNext = (s.recNext + 1) % muxRecent
	s.mu.Unlock()
	s.pop.cnt.sent.Add(1)
	_, _ = s.conn.WriteToUDPAddrPort(b, s.pop.server.addr)
}

func (s *muxSock) sendRegister(i int32) {
	s.mu.Lock()
	cookie := s.cookie
	s.mu.Unlock()
	s.send(i, &wire.Register{Cookie: cookie, NAT: wire.NATNone, Candidates: []netip.AddrPort{s.local}, AllowAny: true}, 0, crypto.PeerID{})
}

func (s *muxSock) sendConnect(i int32, tx uint64, to crypto.PeerID) {
	s.mu.Lock()
	cookie := s.cookie
	s.mu.Unlock()
	s.send(i, &wire.Connect{Cookie: cookie, TxID: tx, Target: to}, tx, to)
}

// read takes the socket's datagrams until it is closed.
func (s *muxSock) read() {
	buf := make([]byte, wire.MaxFrame)
	order := make([]int32, 0, muxRecent)
	for {
		n, _, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.pop.cnt.recv.Add(1)
		b := buf[:n]
		if len(b) > 0 && b[0] == wire.TypeCookieReply {
			s.onCookieReply(b)
			continue
		}
		sealed, err := wire.ParseSealed(b)
		if err != nil || sealed.Sender != s.pop.server.key {
			continue
		}
		// The peers that sent last first, newest first.
		s.mu.Lock()
		order = order[:0]
		for k := 1; k <= muxRecent; k++ {
			i := s.recent[(s.recNext-k+muxRecent)%muxRecent]
			if !slices.Contains(order, i) {
				order = append(order, i)
			}
		}
		s.mu.Unlock()
		if s.tryOpen(&sealed, order) {
			continue
		}
		all := make([]int32, len(s.peers))
		for i := range all {
			all[i] = int32(i)
		}
		s.tryOpen(&sealed, all)
	}
}

// tryOpen opens the frame with the keys of the given peers in turn and
// handles it for the first that opens it.
func (s *muxSock) tryOpen(sealed *wire.Sealed, peers []int32) bool {
	for _, i := range peers {
		if int(i) >= len(s.peers) {
			continue
		}
		m, err := sealed.Open(&s.peers[i].shared)
		if err != nil {
			continue
		}
		s.handle(i, m)
		return true
	}
	return false
}

func (s *muxSock) handle(i int32, m wire.Message) {
	p := s.pop
	switch body := m.Body.(type) {
	case *wire.Registered:
		p.cnt.registrations.Add(1)
		now := time.Now().UnixNano()
		if body.Refresh > 0 {
			p.refresh.Store(int64(time.Duration(body.Refresh) * time.Second))
		}
		if s.peers[i].regd.Swap(now) == 0 {
			p.firstRegs.Add(1)
			p.inflightMu.Lock()
			_, ok := p.inflight[int32(s.base)+i]
			delete(p.inflight, int32(s.base)+i)
			p.inflightMu.Unlock()
			if ok {
				<-p.free
			}
			s.schedule(i, now)
		}
	case *wire.Challenge:
		s.mu.Lock()
		s.cookie = body.Cookie
		s.mu.Unlock()
		if body.For == wire.MsgRegister {
			s.sendRegister(i)
		}
	case *wire.ConnectReply:
		p.pendMu.Lock()
		ch := p.pending[body.TxID]
		delete(p.pending, body.TxID)
		p.pendMu.Unlock()
		if ch != nil {
			ch <- *body
		}
	case *wire.Punch:
		p.cnt.punches.Add(1)
	case *wire.Error:
		if body.Code == wire.ErrCodeNotRegistered {
			s.sendRegister(i)
		}
	}
}

// onCookieReply takes the cookie for the socket and sends again the
// request whose salt it echoes. (A load generator on loopback need not
// guard against forged CookieReplies the way a peer does.)
func (s *muxSock) onCookieReply(b []byte) {
	cookie, salt, err := wire.ParseCookieReply(b)
	if err != nil {
		return
	}
	s.mu.Lock()
	var req muxSalt
	found := false
	for k := range s.salts {
		if x := &s.salts[k]; x.typ != 0 && x.salt == salt {
			req, found = *x, true
			*x = muxSalt{}
			break
		}
	}
	// The cookie is for the socket's address, whichever request it
	// answers: take it even when its salt has left the ring (a socket
	// sends many requests while the server's cookie rotates).
	s.cookie = cookie
	s.mu.Unlock()
	if !found {
		return
	}
	switch req.typ {
	case wire.MsgRegister:
		s.sendRegister(req.peer)
	case wire.MsgConnect:
		s.sendConnect(req.peer, req.tx, req.to)
	}
}

// schedule queues peer i's next refresh one refresh interval after now
// (Unix ns).
func (s *muxSock) schedule(i int32, now int64) {
	s.mu.Lock()
	s.due = append(s.due, muxDue{peer: i, at: now + s.pop.refresh.Load()})
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// refreshLoop sends each queued refresh when it is due and queues the next
// one (whether or not this one is answered: a lost refresh is followed by
// the next one well within the TTL), until ctx ends.
func (s *muxSock) refreshLoop(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		s.mu.Lock()
		var wait time.Duration = time.Hour
		var send []int32
		now := time.Now().UnixNano()
		for len(s.due) > 0 && s.due[0].at <= now {
			send = append(send, s.due[0].peer)
			s.due = s.due[1:]
		}
		if len(s.due) > 0 {
			wait = time.Duration(s.due[0].at - now)
		}
		s.mu.Unlock()
		for _, i := range send {
			s.sendRegister(i)
			s.schedule(i, now)
		}
		if len(send) > 0 {
			continue
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
			t.Stop() // Go 1.23 timers: no stale value to drain
		case <-t.C:
		}
	}
}

// registerAll registers every peer with at most inflight registrations
// outstanding, retransmitting those unanswered for a second, and starts
// the refreshes (until runCtx ends). It returns how long it took and how
// many were not registered by the deadline.
func (p *muxPop) registerAll(ctx, runCtx context.Context, inflight int, timeout time.Duration, progress io.Writer) (time.Duration, int) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, s := range p.socks {
		go s.refreshLoop(runCtx)
	}
	p.inflight = make(map[int32]int64, inflight)
	p.free = make(chan struct{}, inflight)
	start := time.Now()
	// Retransmit what has waited a second.
	go func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			now := time.Now().UnixNano()
			var again []int32
			p.inflightMu.Lock()
			for i, at := range p.inflight {
				if now-at > int64(time.Second) {
					again = append(again, i)
					p.inflight[i] = now
				}
			}
			p.inflightMu.Unlock()
			for _, i := range again {
				s, k := p.sock(int(i))
				s.sendRegister(k)
			}
		}
	}()
	// Round-robin over the sockets, so that every source address
	// registers at its own per-source rate.
	nsock, per := len(p.socks), len(p.socks[0].peers)
	for j := 0; j < nsock*per; j++ {
		i := (j%nsock)*per + j/nsock
		if i >= len(p.peers) {
			continue
		}
		select {
		case p.free <- struct{}{}:
		case <-ctx.Done():
			return time.Since(start), len(p.peers) - int(p.firstRegs.Load())
		}
		p.inflightMu.Lock()
		p.inflight[int32(i)] = time.Now().UnixNano()
		p.inflightMu.Unlock()
		s, k := p.sock(i)
		s.sendRegister(k)
		if (j+1)%100000 == 0 {
			fmt.Fprintf(progress, "  %d peers sent, %d registered\n", j+1, p.firstRegs.Load())
		}
	}
	for int(p.firstRegs.Load()) < len(p.peers) {
		select {
		case <-ctx.Done():
			return time.Since(start), len(p.peers) - int(p.firstRegs.Load())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return time.Since(start), 0
}

// connectLoop runs workers that each have a random registered peer connect
// to another until d is over; a Connect unanswered for a second is sent
// again, three times at most, and its latency counts from the first send.
func (p *muxPop) connectLoop(ctx context.Context, workers int, d time.Duration) connectResult {
	return connectWorkers(ctx, workers, d, func() connectStep {
		ch := make(chan wire.ConnectReply, 1)
		return func(ctx context.Context, r *connectResult) {
			a, b := rand.IntN(len(p.peers)), rand.IntN(len(p.peers))
			if a == b || p.peers[a].regd.Load() == 0 {
				return
			}
			tx := rand.Uint64()
			p.pendMu.Lock()
			p.pending[tx] = ch
			p.pendMu.Unlock()
			s, k := p.sock(a)
			t0 := time.Now()
			var reply wire.ConnectReply
			got := false
			for try := 0; try < 3 && !got && ctx.Err() == nil; try++ {
				s.sendConnect(k, tx, p.peers[b].id)
				select {
				case reply = <-ch:
					got = true
				case <-time.After(time.Second):
				case <-ctx.Done():
				}
			}
			lat := time.Since(t0)
			p.pendMu.Lock()
			delete(p.pending, tx)
			p.pendMu.Unlock()
			select { // a reply that came as we gave up
			case <-ch:
			default:
			}
			switch {
			case got && reply.Found:
				r.ok++
				r.latencies = append(r.latencies, lat)
			case got:
				r.notFound++
			case ctx.Err() != nil:
			default:
				r.noAnswer++
			}
		}
	})
}
