package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/meshreg"
	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/internal/relayclient"
	"github.com/keymesh/keymesh/internal/testutil/ci"
	"github.com/keymesh/keymesh/internal/wire"
)

// TestMembershipFromRedisBehindNAT is the AWS shape of the mesh: each
// instance binds its mesh to a private address no other instance can
// route to (100.98.0.N on its loopback), and a 1:1 NAT in its namespace
// maps its public address onto it both ways (DNAT in, SNAT out), as AWS
// does with an instance's public IPv4. The servers get no --instance and
// no --mesh-peers: they advertise their public mesh addresses
// (--mesh-advertise), claim their numbers and find each other in Redis
// (--mesh-registry). B sits behind an address-filtering NAT and talks to
// instance Y only; A's Punch request and relayed packet land on X. Both
// must reach B from Y's addresses, also after DeadAfter has passed (so Y's
// heartbeats, which name its advertised address, are accepted by X: a
// heartbeat still counts only from the address it names).
func TestMembershipFromRedisBehindNAT(t *testing.T) {
	if testing.Short() {
		ci.Skip(t, "builds the servers and a network namespace lab")
	}
	ci.NeedRoot(t, "network namespaces, veth pairs and iptables")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	l := newNATMeshLab(ctx, t)
	rdvBin, relayBin, sx, sy, ha, hb, rh, redisAddr := l.rdvBin, l.relayBin, l.x, l.y, l.a, l.b, l.redis, l.redisAddr
	redisURL := "redis://" + redisAddr.String() + "/0"

	dir := t.TempDir()
	serverID, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "server.key")
	if err := crypto.WriteKeyFile(keyFile, serverID); err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	peerSecret := writeFile(t, filepath.Join(dir, "peer-secret"), fmt.Sprintf("%x\n", secret))
	cookieSecret := writeFile(t, filepath.Join(dir, "cookie-secret"), "00112233445566778899aabbccddeeff\n")
	ticketLine := crypto.NewTicketKeyLine(1)
	ticketKeys := writeFile(t, filepath.Join(dir, "ticket-keys"), ticketLine)
	ipt := "iptables-" + l.lab.IPTablesBackend()

	type inst struct {
		rdv, relay                   netip.AddrPort // served on the public address
		rdvMesh, relayMesh           netip.AddrPort // bound: private
		rdvAdvertise, relayAdvertise netip.AddrPort // advertised: public
	}
	var x, y inst
	for i, h := range []*natlab.Host{sx, sy} {
		priv := netip.AddrFrom4([4]byte{100, 98, 0, byte(i + 1)})
		in := inst{
			rdv: netip.AddrPortFrom(h.Addr, 3478), relay: netip.AddrPortFrom(h.Addr, 3479),
			rdvMesh: netip.AddrPortFrom(priv, 3490), relayMesh: netip.AddrPortFrom(priv, 3491),
			rdvAdvertise: netip.AddrPortFrom(h.Addr, 3490), relayAdvertise: netip.AddrPortFrom(h.Addr, 3491),
		}
		for _, args := range [][]string{
			{"ip", "addr", "add", priv.String() + "/32", "dev", "lo"},
			{ipt, "-w", "-t", "nat", "-A", "PREROUTING", "-d", h.Addr.String(), "-p", "udp", "-m", "multiport", "--dports", "3490,3491", "-j", "DNAT", "--to-destination", priv.String()},
			{ipt, "-w", "-t", "nat", "-A", "POSTROUTING", "-s", priv.String(), "-j", "SNAT", "--to-source", h.Addr.String()},
		} {
			if out, err := h.Run(ctx, args[0], args[1:]...); err != nil {
				t.Fatalf("%v: %v: %s", args, err, out)
			}
		}
		name := []string{"x", "y"}[i]
		startCmd(t, "rendezvous-"+name, h.Command(ctx, rdvBin,
			"--listen", in.rdv.String(), "--key", keyFile, "--admin", "",
			"--registry", "redis", "--redis", redisURL,
			"--cookie-secret-file", cookieSecret, "--instance", "rdv-"+name,
			"--mesh-listen", in.rdvMesh.String(), "--mesh-advertise", in.rdvAdvertise.String(),
			"--mesh-registry", redisURL, "--peer-secret-file", peerSecret))
		startCmd(t, "relay-"+name, h.Command(ctx, relayBin,
			"--listen", in.relay.String(), "--ticket-key-file", ticketKeys, "--admin", "",
			"--key", filepath.Join(dir, "relay-"+name+".key"),
			"--mesh-listen", in.relayMesh.String(), "--mesh-advertise", in.relayAdvertise.String(),
			"--mesh-registry", redisURL, "--peer-secret-file", peerSecret))
		if i == 0 {
			x = in
		} else {
			y = in
		}
	}

	// Redis holds each group's two members at their public addresses.
	rc := redis.NewClient(&redis.Options{Addr: redisAddr.String(), Dialer: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return rh.DialTCP(ctx, redisAddr)
	}})
	t.Cleanup(func() { rc.Close() })
	relayNumber := map[netip.AddrPort]uint16{}
	for _, g := range []struct {
		group string
		want  []netip.AddrPort
	}{{"relay", []netip.AddrPort{x.relayAdvertise, y.relayAdvertise}}, {"rendezvous", []netip.AddrPort{x.rdvAdvertise, y.rdvAdvertise}}} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := map[netip.AddrPort]uint16{}
			for n := uint16(1); n <= 4; n++ {
				v, err := rc.Get(ctx, fmt.Sprintf("keymesh:mesh:{%s}:%d", g.group, n)).Result()
				if err != nil {
					continue
				}
				if a, ok := meshreg.ParseValue(v); ok {
					got[a] = n
				}
			}
			if len(got) == 2 && got[g.want[0]] != 0 && got[g.want[1]] != 0 {
				if g.group == "relay" {
					relayNumber = got
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("group %s in Redis: %v, want %v under two numbers", g.group, got, g.want)
			}
			time.Sleep(100 * time.Millisecond)
		}
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
		b := newPeerOn(t, ctx, listen(hb), y.rdv, serverID.ID())
		a := newPeerOn(t, ctx, listen(ha), x.rdv, serverID.ID())
		b.waitRegistered(t)
		a.waitRegistered(t)
		for round := range 2 {
			if round == 1 {
				// Past DeadAfter: X forwards only to a home whose
				// heartbeats it accepted.
				time.Sleep(2 * time.Second)
			}
			// X accepts Y's heartbeats once it has read Y in Redis (one
			// membership round after Y joined): ask again until then.
			var from netip.AddrPort
			for deadline := time.Now().Add(20 * time.Second); !from.IsValid() && time.Now().Before(deadline); {
				reply, err := a.client.ConnectPeer(ctx, b.id.ID())
				if err != nil || !reply.Found {
					t.Fatalf("connect: %+v, %v", reply, err)
				}
				select {
				case from = <-b.punches:
				case <-time.After(2 * time.Second):
				}
			}
			if !from.IsValid() {
				t.Fatalf("round %d: B got no Punch through its NAT", round)
			}
			if from != y.rdv {
				t.Fatalf("round %d: B got the Punch from %v, want %v", round, from, y.rdv)
			}
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
		keys, err := crypto.ParseTicketKeys([]byte(ticketLine), nil)
		if err != nil {
			t.Fatal(err)
		}
		tk, err := keys.Open(binding.Ticket)
		if want := relayNumber[y.relayAdvertise]; err != nil || tk.Instance != want {
			t.Fatalf("Y's ticket names instance %d (%v), want %d, the number Y claimed in Redis", tk.Instance, err, want)
		}
		// The control: without an instance X forwards from X's address,
		// which B's NAT drops.
		tk.Instance = 0
		noHome := keys.Seal(nil, tk)
		for range 3 {
			send(t, a, x.relay, wire.AppendRelaySend(nil, noHome, 1, []byte("from X")))
		}
		if n, from := recv(b, 2*time.Second); n > 0 {
			t.Fatalf("B's NAT let in %d bytes from %v: the lab's NAT does not filter by address, the test proves nothing", n, from)
		}
		for round := range 2 {
			if round == 1 {
				time.Sleep(2 * time.Second)
			}
			var n int
			var from netip.AddrPort
			// X may learn Y's number up to one membership round after Y
			// claimed it: resend until then.
			for deadline := time.Now().Add(20 * time.Second); n == 0 && time.Now().Before(deadline); {
				send(t, a, x.relay, wire.AppendRelaySend(nil, binding.Ticket, 2, []byte("via Y")))
				n, from = recv(b, time.Second)
			}
			if n == 0 {
				t.Fatalf("round %d: B got no relayed packet through its NAT", round)
			}
			if from != y.relay {
				t.Fatalf("round %d: B got the relayed packet from %v, want %v", round, from, y.relay)
			}
		}
	})
}
