package turnrelay

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/keymesh/keymesh/internal/crypto"
)

// udpSink is a UDP socket on addr that reports each datagram it gets.
func udpSink(t *testing.T, addr string) (*net.UDPAddr, <-chan []byte) {
	t.Helper()
	c, err := net.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	got := make(chan []byte, 16)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			got <- append([]byte(nil), buf[:n]...)
		}
	}()
	return c.LocalAddr().(*net.UDPAddr), got
}

// TestPeerFilterRefusesInternalPeers is the open-proxy attack: a client
// with valid credentials asks the relay to reach loopback, private,
// carrier-grade NAT, link-local (the metadata service) and multicast
// peers. CreatePermission and ChannelBind get 403 Forbidden, and a Send to
// a refused peer reaches nothing; the same requests for a peer in an
// operator-allowed range work. Over a UDP and a TCP control connection.
func TestPeerFilterRefusesInternalPeers(t *testing.T) {
	ts := startServer(t, 1, func(c *Config) {
		c.AllowDestinations = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	})
	refusedPeer, refusedGot := udpSink(t, "127.0.0.1:0")
	allowedPeer, allowedGot := udpSink(t, "127.0.0.2:0")
	refused := []*net.UDPAddr{
		refusedPeer,
		{IP: net.IPv4(10, 0, 0, 1), Port: 6379},
		{IP: net.IPv4(169, 254, 169, 254), Port: 80},
		{IP: net.IPv4(192, 168, 1, 1), Port: 80},
		{IP: net.IPv4(172, 16, 0, 1), Port: 80},
		{IP: net.IPv4(100, 64, 0, 1), Port: 80},
		{IP: net.IPv4(224, 0, 0, 251), Port: 5353},
		{IP: net.IPv4(0, 0, 0, 0), Port: 80},
	}
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			server := ts.udp
			if network == "tcp" {
				server = ts.tcp
			}
			u, p := crypto.TURNCredentials(testSecret, "mallory-"+network, time.Hour, time.Now())
			c := dialRaw(t, network, server, u, p)
			c.allocateRaw(17)
			before := value(t, ts.metrics.peerRefusals)
			for i, peer := range refused {
				if r := c.request(stun.MethodCreatePermission, peerAddr(peer)); errCode(r) != int(stun.CodeForbidden) {
					t.Errorf("CreatePermission %v: %v (code %d), want 403", peer, r.Type, errCode(r))
				}
				if r := c.request(stun.MethodChannelBind, channelNumber(0x4000+uint16(i)), peerAddr(peer)); errCode(r) != int(stun.CodeForbidden) {
					t.Errorf("ChannelBind %v: %v (code %d), want 403", peer, r.Type, errCode(r))
				}
			}
			if got := value(t, ts.metrics.peerRefusals) - before; got != float64(2*len(refused)) {
				t.Errorf("peer_refusals grew by %v, want %d", got, 2*len(refused))
			}
			// A Send to the refused peer, then a permitted one to the
			// allowed peer: the server handles them in order, so once the
			// second has arrived the first would have too.
			send := func(peer *net.UDPAddr, data string) {
				c.send(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
					peerAddr(peer), stun.RawAttribute{Type: stun.AttrData, Value: []byte(data)}).Raw)
			}
			send(refusedPeer, "must not arrive")
			if r := c.request(stun.MethodCreatePermission, peerAddr(allowedPeer)); r.Type.Class != stun.ClassSuccessResponse {
				t.Fatalf("CreatePermission for an allowed peer: %v (code %d)", r.Type, errCode(r))
			}
			if r := c.request(stun.MethodChannelBind, channelNumber(0x4FFF), peerAddr(allowedPeer)); r.Type.Class != stun.ClassSuccessResponse {
				t.Fatalf("ChannelBind for an allowed peer: %v (code %d)", r.Type, errCode(r))
			}
			send(refusedPeer, "must not arrive either")
			send(allowedPeer, "allowed")
			select {
			case b := <-allowedGot:
				if string(b) != "allowed" {
					t.Fatalf("allowed peer got %q", b)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the allowed peer got nothing")
			}
			select {
			case b := <-refusedGot:
				t.Fatalf("the refused loopback peer got %q through the relay", b)
			default:
			}
		})
	}
}

// TestPeerFilterRefusesTCPConnect: an RFC 6062 TCP allocation cannot
// Connect to a refused peer (403, no connection made); an allowed one can.
func TestPeerFilterRefusesTCPConnect(t *testing.T) {
	ts := startServer(t, 1, func(c *Config) {
		c.AllowDestinations = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	})
	listen := func(addr string) (*net.TCPAddr, <-chan struct{}) {
		ln, err := net.Listen("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		got := make(chan struct{}, 4)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
				got <- struct{}{}
			}
		}()
		return ln.Addr().(*net.TCPAddr), got
	}
	refusedPeer, refusedGot := listen("127.0.0.1:0")
	allowedPeer, allowedGot := listen("127.0.0.2:0")
	u, p := crypto.TURNCredentials(testSecret, "mallory-tcp", time.Hour, time.Now())
	c := dialRaw(t, "tcp", ts.tcp, u, p)
	c.allocateRaw(6)
	for _, peer := range []*net.UDPAddr{
		{IP: refusedPeer.IP, Port: refusedPeer.Port},
		{IP: net.IPv4(10, 1, 2, 3), Port: 6379},
		{IP: net.IPv4(169, 254, 169, 254), Port: 80},
	} {
		if r := c.request(stun.MethodConnect, peerAddr(peer)); errCode(r) != int(stun.CodeForbidden) {
			t.Errorf("Connect %v: %v (code %d), want 403", peer, r.Type, errCode(r))
		}
	}
	if r := c.request(stun.MethodConnect, peerAddr(&net.UDPAddr{IP: allowedPeer.IP, Port: allowedPeer.Port})); r.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("Connect to an allowed peer: %v (code %d)", r.Type, errCode(r))
	}
	select {
	case <-allowedGot:
	case <-time.After(5 * time.Second):
		t.Fatal("the allowed peer saw no connection")
	}
	select {
	case <-refusedGot:
		t.Fatal("the refused loopback peer got a connection through the relay")
	default:
	}
}

// TestPeerFilterRefusesOwnAddress: the relay's own public address is
// refused even when it is a global one (a client would reach the relay's
// other services from inside).
func TestPeerFilterRefusesOwnAddress(t *testing.T) {
	own := netip.MustParseAddr("203.0.113.9")
	ts := startServer(t, 1, func(c *Config) { c.OwnAddrs = []netip.Addr{own} })
	if ts.permitPeer(nil, net.IP(own.AsSlice())) {
		t.Fatal("own address permitted")
	}
	if !ts.permitPeer(nil, net.IPv4(203, 0, 113, 10)) {
		t.Fatal("a public peer refused")
	}
	if ts.permitPeer(nil, net.ParseIP("::ffff:169.254.169.254")) {
		t.Fatal("IPv4-mapped metadata address permitted")
	}
}

// TestOwnAddressOnlyToLiveAllocations: clients of one relay reach each
// other's allocations on its public advertised address, but no other port
// of it (the ticket relay, the TURN port, an admin endpoint).
func TestOwnAddressOnlyToLiveAllocations(t *testing.T) {
	public := netip.MustParseAddr("203.0.113.7")
	ts := startServer(t, 1, func(c *Config) {
		c.RelayIP, c.AdvertiseIP = netip.IPv4Unspecified(), public
		c.AllowDestinations = nil
	})
	if !ts.permitPeer(nil, net.IP(public.AsSlice())) {
		t.Fatal("the relay's public address refused as a peer IP: relay-to-relay clients cannot meet")
	}
	if ts.permitPeer(nil, net.IPv4(127, 0, 0, 1)) {
		t.Fatal("loopback permitted")
	}
	u, p := crypto.TURNCredentials(testSecret, "self", time.Hour, time.Now())
	relayed := dialRaw(t, "udp", ts.udp, u, p).allocateRaw(17)
	live := netip.AddrPortFrom(public, uint16(relayed.Port))
	if ts.ownDestinationRefused(false, live) {
		t.Fatalf("%v, a live allocation, refused", live)
	}
	turnPort := netip.MustParseAddrPort(ts.udp).Port()
	for _, ap := range []netip.AddrPort{
		netip.AddrPortFrom(public, turnPort),
		netip.AddrPortFrom(public, 3479),
		netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(relayed.Port)+1),
	} {
		if !ts.ownDestinationRefused(false, ap) {
			t.Errorf("%v, no allocation's port, allowed", ap)
		}
	}
	if ts.ownDestinationRefused(false, netip.MustParseAddrPort("203.0.113.8:3479")) {
		t.Error("another public host refused")
	}
}
