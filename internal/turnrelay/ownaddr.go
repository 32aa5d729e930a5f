package turnrelay

import (
	"net"
	"net/netip"
	"sync"
)

// ownPorts are the relayed ports of live allocations, UDP and TCP.
//
// Two clients of one relay talk to each other through it (both relayed,
// as WebRTC often ends up): one's peer is the other's relayed address, the
// relay's own advertised address. That address is refused as a peer by
// default, since it also carries the relay's other services (the ticket
// relay, the TURN ports themselves, maybe the admin endpoint); so the
// permission handler lets the advertised address through only when it is
// public, and the relayed sockets then refuse to send to any port of it
// that is not a live allocation's (ownConn, generator.AllocateConn).
type ownPorts struct {
	mu       sync.Mutex
	udp, tcp map[uint16]int
	// conns are the live relayed UDP sockets by port, for the channel
	// table (fastpath.go).
	conns map[uint16]*ownConn
}

func newOwnPorts() *ownPorts {
	return &ownPorts{udp: make(map[uint16]int), tcp: make(map[uint16]int), conns: make(map[uint16]*ownConn)}
}

// addConn registers c, a new relayed UDP socket, under its port.
func (o *ownPorts) addConn(c *ownConn) {
	o.mu.Lock()
	o.udp[c.port]++
	o.conns[c.port] = c
	o.mu.Unlock()
}

// removeConn forgets c.
func (o *ownPorts) removeConn(c *ownConn) {
	o.mu.Lock()
	if o.conns[c.port] == c {
		delete(o.conns, c.port)
	}
	o.mu.Unlock()
	o.remove(false, c.port)
}

// conn returns the live relayed UDP socket on port, or nil.
func (o *ownPorts) conn(port uint16) *ownConn {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.conns[port]
}

func (o *ownPorts) table(tcp bool) map[uint16]int {
	if tcp {
		return o.tcp
	}
	return o.udp
}

func (o *ownPorts) add(tcp bool, port uint16) {
	o.mu.Lock()
	o.table(tcp)[port]++
	o.mu.Unlock()
}

func (o *ownPorts) remove(tcp bool, port uint16) {
	o.mu.Lock()
	t := o.table(tcp)
	if t[port] <= 1 {
		delete(t, port)
	} else {
		t[port]--
	}
	o.mu.Unlock()
}

func (o *ownPorts) has(tcp bool, port uint16) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.table(tcp)[port] > 0
}

// isOwn reports whether a is the relay's bound or advertised address and
// no AllowDestinations range holds it.
func (s *Server) isOwn(a netip.Addr) bool {
	a = a.Unmap()
	return (a == s.cfg.AdvertiseIP || a == s.cfg.RelayIP) && !s.ownAllowed[a]
}

// ownDestinationRefused reports whether sending to ap must be refused: one
// of the relay's own addresses (not in an allowed range), at a port no live
// allocation holds.
func (s *Server) ownDestinationRefused(tcp bool, ap netip.AddrPort) bool {
	if !s.isOwn(ap.Addr()) || s.own.has(tcp, ap.Port()) {
		return false
	}
	s.metrics.peerRefusals.Inc()
	return true
}

// ownConn is an allocation's relayed UDP socket: it drops datagrams to the
// relay's own address unless they go to another live allocation.
type ownConn struct {
	net.PacketConn
	udp  *net.UDPConn // PacketConn, when it is one: writes without allocating
	raw  *relaySock   // udp for the fast path's batch writes, where there are any
	s    *Server
	port uint16
	once sync.Once

	// rbuf is the read buffer of ReadFrom (pion reads each relayed socket
	// from one goroutine), with room for a ChannelData header before the
	// datagram and padding after it.
	rbuf []byte
}

func newOwnConn(s *Server, pc net.PacketConn, port uint16) *ownConn {
	c := &ownConn{PacketConn: pc, s: s, port: port}
	if c.udp, _ = pc.(*net.UDPConn); c.udp != nil {
		c.raw = newRelaySock(c.udp)
	}
	return c
}

func (c *ownConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok && c.s.ownDestinationRefused(false, ua.AddrPort()) {
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, addr)
}

// writeTo is WriteTo for the fast path: the same check, no allocation.
func (c *ownConn) writeTo(p []byte, to netip.AddrPort) error {
	if c.s.ownDestinationRefused(false, to) {
		return nil
	}
	var err error
	if c.udp != nil {
		_, err = c.udp.WriteToUDPAddrPort(p, to)
	} else {
		_, err = c.PacketConn.WriteTo(p, net.UDPAddrFromAddrPort(to))
	}
	return err
}

// ReadFrom returns the next datagram from a peer that has no channel in
// the table (fastpath.go): pion relays it as a Data indication if the peer
// has a permission, or drops it. A datagram from a channel's peer goes to
// the client as ChannelData here, as pion would send it.
func (c *ownConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.udp == nil {
		return c.PacketConn.ReadFrom(p)
	}
	if len(c.rbuf) < channelDataHeader+len(p)+3 {
		c.rbuf = make([]byte, channelDataHeader+len(p)+3)
	}
	for {
		n, from, err := c.udp.ReadFromUDPAddrPort(c.rbuf[channelDataHeader : channelDataHeader+len(p)])
		if err != nil {
			return n, nil, err
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if c.s.relayFromPeer(c, from, c.rbuf, n) {
			continue
		}
		return copy(p, c.rbuf[channelDataHeader:channelDataHeader+n]), net.UDPAddrFromAddrPort(from), nil
	}
}

func (c *ownConn) Close() error {
	c.once.Do(func() { c.s.own.removeConn(c) })
	return c.PacketConn.Close()
}

// ownListener is an allocation's relayed TCP listener, registered in
// ownPorts while open. It holds at most MaxPeerConns connections its peers
// opened at once: pion keeps one it was not asked to bind for 30 s and
// checks each new one against the others under the lock every allocation
// shares.
type ownListener struct {
	net.Listener
	s    *Server
	port uint16
	once sync.Once

	mu    sync.Mutex
	conns int
}

// Accept returns the next peer connection within the cap; one beyond it is
// closed.
func (l *ownListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		full := l.s.cfg.MaxPeerConns >= 1 && l.conns >= l.s.cfg.MaxPeerConns
		if !full {
			l.conns++
		}
		l.mu.Unlock()
		if full {
			l.s.metrics.tcpRefusals.Inc()
			c.Close()
			continue
		}
		return &peerConn{Conn: c, l: l}, nil
	}
}

// peerConn is a connection a peer opened to an allocation, counted by its
// listener until closed.
type peerConn struct {
	net.Conn
	l    *ownListener
	once sync.Once
}

func (c *peerConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.conns--
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

func (l *ownListener) Close() error {
	l.once.Do(func() { l.s.own.remove(true, l.port) })
	return l.Listener.Close()
}

func portOf(a net.Addr) uint16 {
	switch v := a.(type) {
	case *net.UDPAddr:
		return uint16(v.Port)
	case *net.TCPAddr:
		return uint16(v.Port)
	}
	return 0
}
