package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/internal/relayclient"
	"github.com/keymesh/keymesh/internal/testutil/ci"
	"github.com/keymesh/keymesh/internal/wire"
)

// TestHomeInstanceBehindNAT puts B behind a real Linux NAT with address-
// and-port-dependent filtering (natlab's port-restricted site), the filter
// that makes the home instance matter: B talks to instance Y only, so its
// NAT lets in nothing from instance X's address. A (behind its own NAT)
// reaches B through X. The Punch and A's relayed packet reach B because
// they leave from Y; the same packet with a ticket that names no instance
// is forwarded by X, from X's address, and B's NAT drops it.
func TestHomeInstanceBehindNAT(t *testing.T) {
	if testing.Short() {
		ci.Skip(t, "builds the servers and a network namespace lab")
	}
	ci.NeedRoot(t, "network namespaces, veth pairs and iptables")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	l := newNATMeshLab(ctx, t)
	rdvBin, relayBin, sx, sy, ha, hb, redisAddr := l.rdvBin, l.relayBin, l.x, l.y, l.a, l.b, l.redisAddr

	srv := newMeshServer(t)

	// Each instance serves on its 203.0.113.x address and meshes on its
	// 198.51.100.x one (the "private" address).
	type inst struct{ rdv, relay, rdvMesh, relayMesh netip.AddrPort }
	at := func(h *natlab.Host) inst {
		return inst{
			rdv: netip.AddrPortFrom(h.Addr, 3478), relay: netip.AddrPortFrom(h.Addr, 3479),
			rdvMesh: netip.AddrPortFrom(h.Addrs[1], 3490), relayMesh: netip.AddrPortFrom(h.Addrs[1], 3491),
		}
	}
	x, y := at(sx), at(sy)
	relayPeers := fmt.Sprintf("1=%v,2=%v", x.relayMesh, y.relayMesh)
	for i, h := range []*natlab.Host{sx, sy} {
		in, name := at(h), []string{"x", "y"}[i]
		startCmd(t, "rendezvous-"+name, h.Command(ctx, rdvBin, srv.rendezvousArgs(name, in.rdv, in.rdvMesh, "", redisAddr.String())...))
		startCmd(t, "relay-"+name, h.Command(ctx, relayBin, srv.relayArgs(name, i+1, in.relay, in.relayMesh, "", relayPeers)...))
	}
	listen := func(h *natlab.Host) *net.UDPConn {
		c, err := h.ListenUDP(ctx, netip.AddrPort{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	t.Run("punch through B's NAT", func(t *testing.T) {
		b := newPeerOn(t, ctx, listen(hb), y.rdv, srv.id.ID())
		a := newPeerOn(t, ctx, listen(ha), x.rdv, srv.id.ID())
		b.waitRegistered(t)
		a.waitRegistered(t)
		reply, err := a.client.ConnectPeer(ctx, b.id.ID())
		if err != nil || !reply.Found {
			t.Fatalf("connect: %+v, %v", reply, err)
		}
		select {
		case from := <-b.punches:
			if from != y.rdv {
				t.Fatalf("B got the Punch from %v, want %v", from, y.rdv)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("B got no Punch through its NAT")
		}
	})

	t.Run("relayed packet through B's NAT", func(t *testing.T) {
		a, b := listen(ha), listen(hb)
		bid, _ := crypto.GenerateIdentity(nil)
		bctx, bcancel := context.WithTimeout(ctx, 30*time.Second)
		defer bcancel()
		binding, err := relayclient.Bind(bctx, b, net.UDPAddrFromAddrPort(y.relay), bid)
		if err != nil {
			t.Fatalf("bind at Y: %v", err)
		}
		keys, err := crypto.ParseTicketKeys([]byte(srv.ticketLine), nil)
		if err != nil {
			t.Fatal(err)
		}
		tk, err := keys.Open(binding.Ticket)
		if err != nil || tk.Instance != 2 {
			t.Fatalf("Y's ticket names instance %d (%v), want 2", tk.Instance, err)
		}
		// The control: the same ticket without an instance is forwarded by
		// X from X's address, which B's NAT drops.
		tk.Instance = 0
		noHome := keys.Seal(nil, tk)
		for range 3 {
			send(t, a, x.relay, wire.AppendRelaySend(nil, noHome, 1, []byte("from X")))
		}
		if n, from := recv(b, 2*time.Second); n > 0 {
			t.Fatalf("B's NAT let in %d bytes from %v: the lab's NAT does not filter by address, the test proves nothing", n, from)
		}
		// Y's own ticket: A's packet lands on X and leaves from Y.
		send(t, a, x.relay, wire.AppendRelaySend(nil, binding.Ticket, 2, []byte("via Y")))
		n, from := recv(b, 20*time.Second)
		if n == 0 {
			t.Fatal("B got no relayed packet through its NAT")
		}
		if from != y.relay {
			t.Fatalf("B got the relayed packet from %v, want %v", from, y.relay)
		}
	})
}

func send(t *testing.T, c *net.UDPConn, to netip.AddrPort, b []byte) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatal(err)
	}
}

// recv waits up to wait for a Relayed frame on c; n is 0 when none came.
func recv(c *net.UDPConn, wait time.Duration) (int, netip.AddrPort) {
	buf := make([]byte, 2048)
	deadline := time.Now().Add(wait)
	for {
		_ = c.SetReadDeadline(deadline)
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return 0, netip.AddrPort{}
		}
		if n > 0 && buf[0] == wire.TypeRelayed {
			return n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		}
	}
}

// waitRedis waits until Redis answers PING from inside its namespace.
func waitRedis(t *testing.T, ctx context.Context, h *natlab.Host, addr netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := h.DialTCP(ctx, addr)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, err = c.Write([]byte("PING\r\n"))
			var line string
			if err == nil {
				line, err = bufio.NewReader(c).ReadString('\n')
			}
			c.Close()
			if err == nil && strings.HasPrefix(line, "+PONG") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis at %v did not answer: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
