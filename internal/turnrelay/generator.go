package turnrelay

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/pion/turn/v5"
)

// relayGenerator opens the relayed sockets on the relay IP. It takes the
// user's quota slot at the moment an allocation is really made, so
// concurrent requests cannot overrun the quota (see quota).
type relayGenerator struct {
	static  *turn.RelayAddressGeneratorStatic
	quota   *quota
	metrics *metrics
	s       *Server
}

func (g *relayGenerator) Validate() error { return g.static.Validate() }

// take reserves a slot for user; pion probes ports with an empty user
// (EVEN-PORT), which count against nobody.
func (g *relayGenerator) take(user string) error {
	if user == "" {
		return nil
	}
	err := g.quota.acquire(user)
	switch {
	case errors.Is(err, ErrQuota):
		g.metrics.quotaRefusals.Inc()
	case errors.Is(err, ErrCapacity):
		g.metrics.capacityRefusals.Inc()
	}
	return err
}

func (g *relayGenerator) giveBack(user string) {
	if user != "" {
		g.quota.release(user)
	}
}

func (g *relayGenerator) AllocatePacketConn(c turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	if err := g.take(c.UserID); err != nil {
		return nil, nil, err
	}
	pc, addr, err := g.static.AllocatePacketConn(c)
	if err != nil && c.RequestedPort != 0 && c.RequestedPort%2 == 0 && errors.Is(err, syscall.EADDRINUSE) {
		pc, addr, err = g.anotherEvenPort(c)
	}
	if err != nil {
		g.giveBack(c.UserID)
		return nil, nil, err
	}
	oc := newOwnConn(g.s, pc, portOf(addr))
	g.s.own.addConn(oc)
	return oc, addr, nil
}

// anotherEvenPort serves an EVEN-PORT request whose port was taken. pion
// finds an even port by opening and closing a socket, then binds it again;
// another allocation may take it in between. An even requested port always
// comes from that search (a reserved port is the odd one after it), so any
// other even port serves the client as well: keep binding free ports until
// one is even, holding it open.
func (g *relayGenerator) anotherEvenPort(c turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	c.RequestedPort = 0
	for range 64 {
		pc, addr, err := g.static.AllocatePacketConn(c)
		if err != nil {
			return nil, nil, err
		}
		if ua, ok := addr.(*net.UDPAddr); ok && ua.Port%2 == 0 {
			return pc, addr, nil
		}
		pc.Close()
	}
	return nil, nil, errNoEvenPort
}

func (g *relayGenerator) AllocateListener(c turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	if err := g.take(c.UserID); err != nil {
		return nil, nil, err
	}
	ln, addr, err := g.static.AllocateListener(c)
	if err != nil {
		g.giveBack(c.UserID)
		return nil, nil, err
	}
	port := portOf(addr)
	g.s.own.add(true, port)
	return &ownListener{Listener: ln, s: g.s, port: port}, addr, nil
}

// AllocateConn dials a peer for an RFC 6062 Connect (the permission
// handler has passed its address) from the allocation's relayed port. pion
// asks for the advertised address as the local one; the socket binds the
// relay IP, which differs when the public address is not on the host.
func (g *relayGenerator) AllocateConn(c turn.AllocateConnConfig) (net.Conn, error) {
	if ta, ok := c.RemoteAddr.(*net.TCPAddr); ok && g.s.ownDestinationRefused(true, ta.AddrPort()) {
		return nil, fmt.Errorf("%w: %s is the relay's own address", errPeerRefused, ta)
	}
	if la, ok := c.LocalAddr.(*net.TCPAddr); ok {
		c.LocalAddr = &net.TCPAddr{IP: net.IP(g.s.cfg.RelayIP.AsSlice()), Port: la.Port}
	}
	return g.static.AllocateConn(c)
}
