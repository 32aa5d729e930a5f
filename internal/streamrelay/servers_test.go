package streamrelay

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/ratelimit"
	"github.com/keymesh/keymesh/internal/wire"
)

// limitedServer is a keymesh server's per-source limit in front of a UDP
// socket, as the rendezvous and the ticket relay consult it: every
// datagram that passes is answered, the rest dropped. The stream relay's
// presence address is a shared source with factor times the budget.
type limitedServer struct {
	c        *net.UDPConn
	answered atomic.Int64
	refused  atomic.Int64
}

func newLimitedServer(t *testing.T, clk *clock, perSecond, burst, factor float64) *limitedServer {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	lim := ratelimit.New(ratelimit.Config{PerSecond: perSecond, Burst: burst,
		Shared: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, SharedFactor: factor})
	s := &limitedServer{c: c}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if !lim.Allow(from.Addr(), clk.Now().UnixNano()) {
				s.refused.Add(1)
				continue
			}
			s.answered.Add(1)
			_, _ = c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return s
}

func (s *limitedServer) addr() netip.AddrPort { return s.c.LocalAddr().(*net.UDPAddr).AddrPort() }

// TestOneTunnelCannotSpendServerBudget is the shared-address attack: every
// tunnel reaches the rendezvous and the ticket relay from the relay's one
// presence address, so one tunnel flooding a server at the tunnel rate
// would spend the budget that server gives that address, and every other
// tunnelled peer would fail to register or bind. The stream relay holds
// each tunnel to ServerRate toward a keymesh server, so the honest tunnels
// are all answered. (The clock stands still: no bucket refills.)
func TestOneTunnelCannotSpendServerBudget(t *testing.T) {
	clk := newClock()
	server := newLimitedServer(t, clk, 5, 10, 4) // 40 for the relay's address
	target, srv := startRelay(t, func(c *Config) {
		c.Now = clk.Now
		c.ServerAddrs = []netip.AddrPort{server.addr()}
		c.ServerRate, c.ServerBurst = 5, 10
		c.ProbeBurst = 1000
	})
	const flood, honest, each = 1000, 5, 5 // with the abuser's burst, 35 of 40
	abuser := mustDial(t, target)
	for range flood {
		if _, err := abuser.WriteToUDPAddrPort([]byte("register"), server.addr()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the flood handled", func() bool {
		return srv.sent()+srv.dropped(dropServerRate)+srv.dropped(dropRate) == flood
	})
	waitFor(t, "the server saw what got through", func() bool { // (the kernel may drop some of a flood)
		return float64(server.answered.Load()+server.refused.Load()) >= min(srv.sent(), 40)
	})
	if got := server.answered.Load(); got > 10 {
		t.Errorf("the abusive tunnel spent %d of the server's budget, want at most its burst of 10", got)
	}
	for i := range honest {
		tun := mustDial(t, target)
		for range each {
			if _, err := tun.WriteToUDPAddrPort([]byte("register"), server.addr()); err != nil {
				t.Fatal(err)
			}
		}
		_ = tun.SetReadDeadline(time.Now().Add(10 * time.Second))
		for j := range each {
			if _, _, err := tun.ReadFrom(make([]byte, 100)); err != nil {
				t.Fatalf("honest tunnel %d: answer %d of %d: %v (server refused %d)", i, j, each, err, server.refused.Load())
			}
		}
	}
}

// A ticket relay's RelaySend frames are the data a tunnelled peer relays,
// bounded by the tunnel's rate and the ticket relay's own: ServerRate
// bounds only the rest (binds, registrations).
func TestServerRateSparesRelayedData(t *testing.T) {
	clk := newClock()
	server := newLimitedServer(t, clk, -1, 0, 1) // no limit: counts what arrives
	target, srv := startRelay(t, func(c *Config) {
		c.Now = clk.Now
		c.ServerAddrs = []netip.AddrPort{server.addr()}
		c.ServerRate, c.ServerBurst = 5, 10
		c.ProbeBurst = 1000
	})
	tun := mustDial(t, target)
	send := []byte{wire.TypeRelaySend, wire.Version, 1, 2, 3}
	for range 100 {
		_, _ = tun.WriteToUDPAddrPort(send, server.addr())
	}
	for range 100 {
		_, _ = tun.WriteToUDPAddrPort([]byte("bind"), server.addr())
	}
	waitFor(t, "200 datagrams handled", func() bool { return srv.sent()+srv.dropped(dropServerRate) == 200 })
	if got := srv.sent(); got != 110 {
		t.Fatalf("%v datagrams went to the server, want the 100 RelaySends and a burst of 10 others", got)
	}
}
