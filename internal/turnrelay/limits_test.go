package turnrelay

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/keymesh/keymesh/internal/crypto"
)

// rawFrom is dialRaw from a chosen local address.
func rawFrom(t *testing.T, local, server, user, pass string) *rawClient {
	t.Helper()
	d := net.Dialer{LocalAddr: net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(local), 0))}
	c, err := d.Dial("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, conn: c, user: user, pass: pass}
}

// TestAllocationCapAcrossUsers: many users (each within its quota) cannot
// hold more than the server-wide cap; the one beyond gets 508, and a freed
// slot can be taken again. The old server had no cap.
func TestAllocationCapAcrossUsers(t *testing.T) {
	const cap = 3
	ts := startServer(t, 2, func(c *Config) { c.MaxAllocations = cap })
	var clients []*rawClient
	for i := range cap {
		u, p := crypto.TURNCredentials(testSecret, fmt.Sprintf("user%d", i), time.Hour, time.Now())
		c := dialRaw(t, "udp", ts.udp, u, p)
		c.allocateRaw(17)
		clients = append(clients, c)
	}
	u, p := crypto.TURNCredentials(testSecret, "one-too-many", time.Hour, time.Now())
	extra := dialRaw(t, "udp", ts.udp, u, p)
	r := extra.request(stun.MethodAllocate, requestedTransport(17))
	if code := errCode(r); code != int(stun.CodeInsufficientCapacity) {
		t.Fatalf("allocation beyond the cap: %v (code %d), want 508", r.Type, code)
	}
	if got := value(t, ts.metrics.capacityRefusals); got != 1 {
		t.Fatalf("capacity_refusals = %v, want 1", got)
	}
	// Free one (Refresh with LIFETIME 0), then the extra client fits.
	if r := clients[0].request(stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}}); r.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("delete: %v (code %d)", r.Type, errCode(r))
	}
	waitFor(t, "slot freed", func() bool { return ts.quota.countAll() == cap-1 })
	extra.allocateRaw(17)
	if n := ts.AllocationCount(); n != cap {
		t.Fatalf("%d live allocations, want %d", n, cap)
	}
}

// TestAllocationRatePerSource: one source address, rotating ports and user
// names, gets AllocationBurst allocations and then 486; another source is
// not affected. The clock stands still, so nothing refills.
func TestAllocationRatePerSource(t *testing.T) {
	const burst = 4
	now := time.Unix(1_800_000_000, 0)
	ts := startServer(t, 1, func(c *Config) {
		c.AllocationRate, c.AllocationBurst = 0.001, burst
		c.Now = func() time.Time { return now }
	})
	for i := range burst + 3 {
		u, p := crypto.TURNCredentials(testSecret, fmt.Sprintf("rot%d", i), time.Hour, now)
		c := rawFrom(t, "127.0.0.1", ts.udp, u, p)
		r := c.request(stun.MethodAllocate, requestedTransport(17))
		switch code := errCode(r); {
		case i < burst && r.Type.Class != stun.ClassSuccessResponse:
			t.Fatalf("allocation %d within the burst: %v (code %d)", i, r.Type, code)
		case i >= burst && code != int(stun.CodeAllocQuotaReached):
			t.Fatalf("allocation %d beyond the burst: %v (code %d), want 486", i, r.Type, code)
		}
	}
	if got := value(t, ts.metrics.rateRefusals); got != 3 {
		t.Fatalf("rate_refusals = %v, want 3", got)
	}
	u, p := crypto.TURNCredentials(testSecret, "elsewhere", time.Hour, now)
	rawFrom(t, "127.0.0.2", ts.udp, u, p).allocateRaw(17)
}

// TestAdvertiseIP: allocations bound to the unspecified address (as on a
// cloud instance whose public address is not on an interface) advertise
// the public address in XOR-RELAYED-ADDRESS, and still relay: a peer
// reaching the bound socket at a local address is delivered.
func TestAdvertiseIP(t *testing.T) {
	public := netip.MustParseAddr("203.0.113.7")
	ts := startServer(t, 1, func(c *Config) {
		c.RelayIP = netip.IPv4Unspecified()
		c.AdvertiseIP = public
	})
	if ts.AdvertiseIP() != public.String() || ts.RelayIP() != "0.0.0.0" {
		t.Fatalf("relay %s advertise %s", ts.RelayIP(), ts.AdvertiseIP())
	}
	u, p := crypto.TURNCredentials(testSecret, "cloud", time.Hour, time.Now())
	c := dialRaw(t, "udp", ts.udp, u, p)
	relayed := c.allocateRaw(17)
	if !relayed.IP.Equal(net.IP(public.AsSlice())) || relayed.Port == 0 {
		t.Fatalf("XOR-RELAYED-ADDRESS %v, want %v:<port>", relayed, public)
	}
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if r := c.request(stun.MethodCreatePermission, peerAddr(peer.LocalAddr().(*net.UDPAddr))); r.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("CreatePermission: %v (code %d)", r.Type, errCode(r))
	}
	// The public address is not on this host; the socket bound to 0.0.0.0
	// takes the same port on loopback.
	if _, err := peer.WriteTo([]byte("to the relayed port"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: relayed.Port}); err != nil {
		t.Fatal(err)
	}
	for {
		b, err := c.read(5 * time.Second)
		if err != nil {
			t.Fatalf("no Data indication: %v", err)
		}
		m := &stun.Message{Raw: b}
		if m.Decode() != nil || m.Type != stun.NewType(stun.MethodData, stun.ClassIndication) {
			continue
		}
		data, err := m.Get(stun.AttrData)
		if err != nil || string(data) != "to the relayed port" {
			t.Fatalf("Data indication %q, %v", data, err)
		}
		return
	}
}

func TestAdvertiseIPValidation(t *testing.T) {
	lo, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lo.Close()
	for name, cfg := range map[string]Config{
		"unspecified, no advertise": {RelayIP: netip.IPv4Unspecified()},
		"advertise unspecified":     {AdvertiseIP: netip.IPv4Unspecified()},
		"families differ":           {RelayIP: netip.IPv4Unspecified(), AdvertiseIP: netip.MustParseAddr("2001:db8::1")},
	} {
		cfg.PacketConns, cfg.Secret = []net.PacketConn{lo}, testSecret
		if err := cfg.withDefaults().validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestAdvertiseIPTCPConnect: an RFC 6062 Connect from an allocation whose
// advertised address is not on the host dials from the bound address (pion
// asks to bind the advertised one, which fails with 447).
func TestAdvertiseIPTCPConnect(t *testing.T) {
	ts := startServer(t, 1, func(c *Config) {
		c.RelayIP = netip.IPv4Unspecified()
		c.AdvertiseIP = netip.MustParseAddr("203.0.113.7")
	})
	ln, err := net.Listen("tcp4", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
			accepted <- struct{}{}
		}
	}()
	u, p := crypto.TURNCredentials(testSecret, "cloud-tcp", time.Hour, time.Now())
	c := dialRaw(t, "tcp", ts.tcp, u, p)
	c.allocateRaw(6)
	peer := ln.Addr().(*net.TCPAddr)
	if r := c.request(stun.MethodConnect, peerAddr(&net.UDPAddr{IP: peer.IP, Port: peer.Port})); r.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("Connect: %v (code %d)", r.Type, errCode(r))
	}
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the peer saw no connection")
	}
}
