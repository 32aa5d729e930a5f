package rendezvous

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/testutil/ci"
	"github.com/keymesh/keymesh/internal/testutil/testclock"
	"github.com/keymesh/keymesh/internal/wire"
)

// TestNoUnprovenReplyLargerThanRequest is issue 10 item 8 for the
// rendezvous: over real sockets, IPv4 and IPv6, it sends every kind of
// datagram the server answers (or should ignore) without proof of the
// source address, at its smallest, and fails if any reply is larger than
// its request, STUN Binding answers excepted; those must be rate-limited
// per source (the old server answered every one within the general
// datagram limit of 100 a burst).
func TestNoUnprovenReplyLargerThanRequest(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			ln, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(host), 0)))
			if err != nil {
				if host == "::1" {
					ci.Skipf(t, "no IPv6 loopback: %v", err)
				}
				t.Fatal(err)
			}
			defer ln.Close()
			clk := testclock.New(time.Unix(1_760_000_000, 0))
			id, err := crypto.GenerateIdentity(nil)
			if err != nil {
				t.Fatal(err)
			}
			srv, err := New(Config{
				Identity: id,
				Registry: discovery.NewMemory(clk.Now),
				Cookies:  crypto.NewCookieJar([]byte("0123456789abcdef0123456789abcdef"), clk.Now),
				Relays:   []string{"198.51.100.7:3479"},
				Now:      clk.Now,
				Workers:  1,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ctx, ln) }()
			t.Cleanup(func() {
				cancel()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Error("Serve did not stop")
				}
			})
			server := ln.LocalAddr().(*net.UDPAddr).AddrPort()
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(host), 0)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			me := c.LocalAddr().(*net.UDPAddr).AddrPort()

			peerID, err := crypto.GenerateIdentity(nil)
			if err != nil {
				t.Fatal(err)
			}
			shared, err := peerID.SharedKey(srv.ID())
			if err != nil {
				t.Fatal(err)
			}
			seal := func(at time.Time, b wire.Body) []byte {
				var cookie crypto.Cookie
				switch m := b.(type) {
				case *wire.Register:
					cookie = m.Cookie
				case *wire.Connect:
					cookie = m.Cookie
				}
				f, _ := wire.SealRequest(nil, peerID.ID(), shared, wire.AppendMessage(nil, wire.Message{Time: at.UnixMilli(), Body: b}), &cookie)
				return f
			}
			elsewhere := netip.MustParseAddrPort("192.0.2.1:9")
			now := clk.Now()
			junkSealed := append([]byte{wire.TypeSealed, wire.Version}, make([]byte, wire.SealedOverhead+8)...)
			stranger, _ := crypto.GenerateIdentity(nil)
			sid := stranger.ID()
			kinds := []struct {
				name string
				pkt  []byte
			}{
				{"register without cookie", seal(now, &wire.Register{})},
				{"connect without cookie", seal(now, &wire.Connect{})},
				{"connect by address without cookie", seal(now, &wire.Connect{TargetAddr: stranger.ID().OverlayAddr()})},
				{"register with another address's cookie", seal(now, &wire.Register{Cookie: srv.cfg.Cookies.Make(elsewhere)})},
				{"connect with another address's cookie", seal(now, &wire.Connect{Cookie: srv.cfg.Cookies.Make(elsewhere)})},
				{"register stamped out of the window", seal(now.Add(-time.Hour), &wire.Register{})},
				{"probe", seal(now, &wire.Probe{})},
				{"sealed junk", junkSealed},
				{"sealed junk from a stranger's key", append(append([]byte{wire.TypeSealed, wire.Version}, sid[:]...), make([]byte, 64)...)},
				{"relay bind", wire.AppendRelayBind(nil, peerID, now, crypto.Cookie{})},
				{"data", wire.AppendData(nil, 1, nil)},
				{"STUN allocate", stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest)).Raw},
				{"STUN binding indication", stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication)).Raw},
				{"STUN binding success", stun.MustBuild(stun.TransactionID, stun.BindingSuccess).Raw},
				{"one byte", []byte{0}},
				{"sealed header only", []byte{wire.TypeSealed, wire.Version}},
				{"sealed register (protocol 1)", wire.SealFrame(nil, peerID.ID(), shared, wire.Message{Time: now.UnixMilli(), Body: &wire.Register{}})},
				{"request junk from a stranger's key (cookie reply)", append(append([]byte{wire.TypeRequest, wire.RequestVersion}, sid[:]...), make([]byte, crypto.NonceSize+crypto.BoxOverhead)...)},
				{"request header only", []byte{wire.TypeRequest, wire.RequestVersion}},
			}
			// One socket per kind, all sent at once, so that each reply is
			// attributed to its request.
			socks := make([]*net.UDPConn, len(kinds))
			for i, k := range kinds {
				if socks[i], err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(me.Addr(), 0))); err != nil {
					t.Fatal(err)
				}
				defer socks[i].Close()
				if _, err := socks[i].WriteToUDPAddrPort(k.pkt, server); err != nil {
					t.Fatal(err)
				}
			}
			bare := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
			for range 3 * DefaultSTUNBurst {
				if _, err := c.WriteToUDPAddrPort(bare, server); err != nil {
					t.Fatal(err)
				}
			}
			// A last request whose CookieReply marks the end: the one worker
			// handles datagrams in order, so everything before it has been
			// answered (or dropped) once it arrives.
			marker, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(me.Addr(), 0)))
			if err != nil {
				t.Fatal(err)
			}
			defer marker.Close()
			if _, err := marker.WriteToUDPAddrPort(seal(now, &wire.Register{}), server); err != nil {
				t.Fatal(err)
			}
			_ = marker.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := marker.Read(make([]byte, 2048)); err != nil {
				t.Fatalf("no CookieReply to the marker: %v", err)
			}
			read := func(c *net.UDPConn) (sizes []int) {
				buf := make([]byte, 2048)
				_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				for {
					n, err := c.Read(buf)
					if err != nil {
						return sizes
					}
					sizes = append(sizes, n)
				}
			}
			answered := 0
			for i, k := range kinds {
				sizes := read(socks[i])
				t.Logf("%s: %d-byte request, replies %v", k.name, len(k.pkt), sizes)
				for _, n := range sizes {
					answered++
					if n > len(k.pkt) {
						t.Errorf("%s: %d-byte reply to a %d-byte request from an unproven source", k.name, n, len(k.pkt))
					}
				}
			}
			if answered < 5 {
				t.Errorf("only %d replies: the cookie replies are missing, the test proves nothing", answered)
			}

			// STUN Binding answers are larger (32 bytes for IPv4, 44 for
			// IPv6, to a bare 20-byte request): bounded per source. The
			// clock stands still, so nothing refills.
			got := read(c)
			t.Logf("STUN Binding: 20-byte request, %d of %d answered, %v bytes each", len(got), 3*DefaultSTUNBurst, got[:min(1, len(got))])
			for _, n := range got {
				if limit := 20 + 12 + 12*boolInt(me.Addr().Is6()); n > limit {
					t.Errorf("STUN answer of %d bytes, at most %d expected", n, limit)
				}
			}
			if len(got) == 0 || len(got) > DefaultSTUNBurst {
				t.Fatalf("%d STUN answers to %d requests from one source; the per-source burst is %d", len(got), 3*DefaultSTUNBurst, DefaultSTUNBurst)
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
