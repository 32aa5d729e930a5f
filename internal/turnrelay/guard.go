package turnrelay

import (
	"net"
	"net/netip"
	"sync"

	"github.com/keymesh/keymesh/internal/ratelimit"
)

// guardConn is a UDP socket as pion sees it, with the checks a server on a
// public address needs before its source addresses are proven (the long-term
// credential proves them; nothing before it does):
//
//   - STUN Binding requests are answered only within a per-source rate
//     (BindingRate): the answer is larger than the request.
//   - No answer without MESSAGE-INTEGRITY leaves larger than the request it
//     answers, except a 401 or 438 challenge within a per-source rate
//     (ChallengeRate): a client's first Allocate carries no credentials and
//     can be smaller than any challenge (REALM and NONCE alone are 40 bytes).
//     Anything else over size is dropped.
//   - A request with MESSAGE-INTEGRITY is dropped unanswered unless its
//     integrity verifies with its user's key (checkIntegrity), within a
//     global budget of checks (IntegrityRate) that sources which passed
//     one recently do not draw on: nonces are not bound to an address, so
//     a spoofed source can send a valid nonce and realm.
//   - A ChannelBind refused for its peer gets 403 (forbidChannelBind).
//
// The rates are charged where the request is read, so a flood over them is
// dropped after a header parse and never costs pion a parse, a nonce and an
// answer: pion answers every request without MESSAGE-INTEGRITY other than
// Binding with a 401, so such a request takes its challenge token when it
// is read, and is dropped there when there is none.
//
// pion reads a socket from one goroutine and answers each request before
// reading the next one, so the request an answer belongs to is the last one
// read; other writers (allocations relaying to their clients) send only
// indications and ChannelData, never answers.
type guardConn struct {
	net.PacketConn
	s *Server

	// batch reads the socket in batches when it is a *net.UDPConn on
	// Linux (nil otherwise), and local is its address: the server relays
	// ChannelData for bound channels from the batch (fastpath.go).
	batch *batchReader
	send  *batchWriter // the fast path's sends from the batch, with batch
	local netip.AddrPort

	mu   sync.Mutex
	last struct {
		txid [12]byte
		size int
		// challenged: the request was unauthenticated and took its
		// challenge token when read.
		challenged bool
	}
}

// newGuardConn guards pc, reading it in batches when it can.
func newGuardConn(s *Server, pc net.PacketConn) *guardConn {
	g := &guardConn{PacketConn: pc, s: s}
	var u *net.UDPConn
	switch c := pc.(type) {
	case *net.UDPConn:
		u = c
	case *splitConn:
		u = c.UDPConn
	}
	if u == nil {
		return g
	}
	local, ok := udpAddrPort(u.LocalAddr())
	if !ok {
		return g
	}
	g.local = local
	if br, err := newBatchReader(u); err == nil {
		g.batch, g.send = br, newBatchWriter()
	}
	return g
}

// writeData sends b, a ChannelData frame, to a client, as WriteTo does
// (the guard has nothing to check in one) without allocating.
func (g *guardConn) writeData(b []byte, to netip.AddrPort) error {
	var err error
	switch c := g.PacketConn.(type) {
	case *splitConn:
		_, err = c.writer().WriteToUDPAddrPort(b, to)
	case *net.UDPConn:
		_, err = c.WriteToUDPAddrPort(b, to)
	default:
		_, err = c.WriteTo(b, net.UDPAddrFromAddrPort(to))
	}
	return err
}

// ReadFrom returns the next datagram for pion: one the fast path did not
// relay, and that passes the guard's rates.
func (g *guardConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if g.batch == nil || !g.local.IsValid() {
		for {
			n, addr, err := g.PacketConn.ReadFrom(p)
			if err != nil || g.admit(p[:n], addr) {
				return n, addr, err
			}
		}
	}
	for {
		if !g.batch.pending() {
			g.s.flush(g.send) // before the next read may block
		}
		b, from, err := g.batch.next()
		if err != nil {
			return 0, nil, err
		}
		if !from.IsValid() || g.s.relayChannelData(g.send, g.local, from, b) {
			continue
		}
		g.s.flush(g.send) // pion handles what follows in order
		n := copy(p, b)
		addr := net.UDPAddrFromAddrPort(from)
		if g.admit(p[:n], addr) {
			return n, addr, nil
		}
	}
}

// admit reports whether datagram b from addr passes the Binding and
// challenge rates and the integrity check, and notes the request an answer will belong to.
func (g *guardConn) admit(b []byte, addr net.Addr) bool {
	m := parseAsPion(b)
	if !m.ok || m.class() != classRequest {
		return true
	}
	challenged := false
	if m.method() == methodBinding {
		if !g.s.bindings.Allow(addrOf(addr), g.s.nowNano()) {
			g.s.metrics.dropped.WithLabelValues(dropBinding).Inc()
			return false
		}
	} else if f, ok := parseAuth(b); ok && f.mi == nil {
		if !g.s.challenges.Allow(addrOf(addr), g.s.nowNano()) {
			g.s.metrics.dropped.WithLabelValues(dropChallenge).Inc()
			return false
		}
		challenged = true
	} else if ok && !g.s.checkIntegrity(b, f, addrPortOf(addr)) {
		return false
	}
	g.mu.Lock()
	g.last.txid, g.last.size, g.last.challenged = m.txid, len(b), challenged
	g.mu.Unlock()
	return true
}

// WriteTo sends p unless it is an unauthenticated answer the rules above
// refuse; a refused answer is dropped silently (pion is told it was sent).
func (g *guardConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	m := parseSTUN(p)
	if !m.ok || (m.class() != classSuccess && m.class() != classError) {
		return g.PacketConn.WriteTo(p, addr)
	}
	if m.class() == classError {
		forbidChannelBind(p)
	}
	if reason := g.refuse(m, p, addr); reason != "" {
		g.s.metrics.dropped.WithLabelValues(reason).Inc()
		return len(p), nil
	}
	return g.PacketConn.WriteTo(p, addr)
}

// refuse returns why answer p (header m) to addr must not be sent, or "".
func (g *guardConn) refuse(m stunMessage, p []byte, addr net.Addr) string {
	if authenticated(p) {
		return ""
	}
	if m.method() == methodBinding && m.class() == classSuccess {
		return "" // rate-limited where the request was read
	}
	g.mu.Lock()
	reqSize, challenged := 0, false
	if g.last.txid == m.txid {
		reqSize, challenged = g.last.size, g.last.challenged
	}
	g.mu.Unlock()
	if len(p) <= reqSize {
		return ""
	}
	if m.class() == classError {
		if c := errorCode(p); c == codeUnauthorized || c == codeStaleNonce {
			if challenged || g.s.challenges.Allow(addrOf(addr), g.s.nowNano()) {
				return ""
			}
			return dropChallenge
		}
	}
	return dropOversize
}

// guardListener hands pion TCP connections whose refused ChannelBinds get
// 403 (see forbidChannelBind), within the caps on open connections per
// source and in all (pion keeps a goroutine and a buffer for each as long
// as the client holds it open). TCP needs no size rule: the handshake
// proves the client's address.
type guardListener struct {
	net.Listener
	s *Server
}

func (l guardListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := addrOf(c.RemoteAddr())
		if !l.s.tcp.take(src, l.s.cfg.MaxTCPConnsPerSource, l.s.cfg.MaxTCPConnsPerNet, l.s.cfg.MaxTCPConns) {
			l.s.metrics.tcpRefusals.Inc()
			l.s.log.Debug("turn tcp connection refused: too many open", "src", addrString(c.RemoteAddr()))
			c.Close()
			continue
		}
		return &guardTCPConn{Conn: c, s: l.s, src: src}, nil
	}
}

type guardTCPConn struct {
	net.Conn
	s    *Server
	src  netip.Addr
	once sync.Once
}

// Write sends p, a whole STUN message or ChannelData frame as pion writes
// them, after forbidChannelBind.
func (c *guardTCPConn) Write(p []byte) (int, error) {
	forbidChannelBind(p)
	return c.Conn.Write(p)
}

// Close closes the connection and frees its place.
func (c *guardTCPConn) Close() error {
	c.once.Do(func() { c.s.tcp.release(c.src) })
	return c.Conn.Close()
}

// tcpConns counts open TCP connections per source (ratelimit.Source), per
// network (ratelimit.Net) and in all.
type tcpConns struct {
	mu        sync.Mutex
	perSource map[netip.Addr]int
	perNet    map[netip.Prefix]int
	all       int
}

func newTCPConns() *tcpConns {
	return &tcpConns{perSource: make(map[netip.Addr]int), perNet: make(map[netip.Prefix]int)}
}

// take counts one more connection from address a unless its source
// already holds perSource, its network perNet or the server all (a cap
// below one is no cap).
func (t *tcpConns) take(a netip.Addr, perSource, perNet, all int) bool {
	src, n := ratelimit.Source(a), ratelimit.Net(a)
	t.mu.Lock()
	defer t.mu.Unlock()
	if (all >= 1 && t.all >= all) || (perSource >= 1 && t.perSource[src] >= perSource) ||
		(perNet >= 1 && t.perNet[n] >= perNet) {
		return false
	}
	t.perSource[src]++
	t.perNet[n]++
	t.all++
	return true
}

// release forgets one connection from address a.
func (t *tcpConns) release(a netip.Addr) {
	src, n := ratelimit.Source(a), ratelimit.Net(a)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.perSource[src]--; t.perSource[src] <= 0 {
		delete(t.perSource, src)
	}
	if t.perNet[n]--; t.perNet[n] <= 0 {
		delete(t.perNet, n)
	}
	t.all--
}

// addrPortOf returns a's IP (unmapped) and port, or the zero AddrPort.
func addrPortOf(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPortFrom(addrOf(a), 0)
}

// addrOf returns a's IP, or the zero Addr.
func addrOf(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(addrString(a))
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
