package rendezvous_test

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/mesh"
	"github.com/keymesh/keymesh/internal/obs"
	"github.com/keymesh/keymesh/internal/rendezvous"
	"github.com/keymesh/keymesh/internal/rzclient"
	"github.com/keymesh/keymesh/internal/testutil/redistest"
	"github.com/keymesh/keymesh/internal/wire"
)

// regionInstance is one rendezvous instance of a multi-region group: its
// own socket (its regional address), its own mesh node, its own replay
// cache, and its own client of the group's shared Redis registry.
type regionInstance struct {
	*testServer
	name     string
	meshAddr netip.AddrPort
	reg      *discovery.Redis
}

// startRegion runs one instance of a group that shares the server
// identity, the cookie secret and the Redis at redisAddr.
func startRegion(t *testing.T, name string, id *crypto.Identity, redisAddr string, meshKey *mesh.Key) *regionInstance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	opts, err := discovery.ParseRedisURL("redis://" + redisAddr + "/0")
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	reg, err := discovery.NewRedis(rctx, discovery.RedisOptions{Client: redis.NewUniversalClient(opts), Prefix: "regreplay"})
	rcancel()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	mconn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	node, err := mesh.NewNode(mesh.Config{Key: meshKey, Conn: mconn, Handle: rendezvous.DeliverPunches(conn, slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	admin := obs.NewAdmin("rendezvous", nil)
	srv, err := rendezvous.New(rendezvous.Config{
		Identity: id,
		Registry: reg,
		// One cookie period for the whole test, the same at both
		// instances: a replay crossing into the next period would carry
		// the previous cookie and get a Challenge before the registry.
		Cookies:    crypto.NewCookieJar([]byte("0123456789abcdef0123456789abcdef"), func() time.Time { return time.Unix(1_800_000_000, 0) }),
		Relays:     []string{"127.0.0.1:9"},
		Registerer: admin.Registry,
		Instance:   name,
		Workers:    2,
		Mesh:       node,
		MeshAddr:   node.Addr(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ctx, conn); err != nil {
			t.Errorf("%s: Serve: %v", name, err)
		}
	}()
	go func() { defer wg.Done(); _ = node.Serve(ctx) }()
	hs := httptest.NewServer(admin.Handler())
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		conn.Close()
		mconn.Close()
		hs.Close()
		_ = reg.Close()
	})
	return &regionInstance{
		testServer: &testServer{addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(), id: srv.ID(), metrics: hs.URL + "/metrics"},
		name:       name, meshAddr: node.Addr(), reg: reg,
	}
}

// TestReplayedRegisterAtAnotherInstance is the multi-region replay: two
// instances X and Y share the registry and the cookie secret but not their
// replay caches. B registers at X; an attacker who captured B's Register
// sends it, byte for byte and from B's address, to Y (another anycast
// route) within the clock window. Y must refuse it: B's record keeps X as
// its home, and a Connect to B taken by Y still produces a Punch that
// reaches B through X, the only instance whose datagrams B's NAT lets in
// (the front door pins B's flow to X).
func TestReplayedRegisterAtAnotherInstance(t *testing.T) {
	rd := redistest.Start(t)
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	meshKey, err := mesh.NewKey([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	x := startRegion(t, "x", id, rd.Addr(), meshKey)
	y := startRegion(t, "y", id, rd.Addr(), meshKey)

	// B talks to X only; its NAT (modelled by natFrom) lets in only what
	// comes from X's address. Every datagram B sends is kept.
	var (
		mu   sync.Mutex
		sent [][]byte
	)
	b := startPeer(t, x.testServer, id.ID(), func(c *rzclient.Config) {
		send := c.Send
		c.Send = func(pkt []byte, to netip.AddrPort) error {
			mu.Lock()
			sent = append(sent, append([]byte(nil), pkt...))
			mu.Unlock()
			return send(pkt, to)
		}
	})
	b.natFrom(x.addr)
	b.waitRegistered(t)
	a := startPeer(t, y.testServer, id.ID(), nil)
	a.waitRegistered(t)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rec, err := x.reg.Get(ctx, b.id.ID())
	if err != nil {
		t.Fatal(err)
	}
	if rec.Home != x.meshAddr {
		t.Fatalf("B registered at X but its home is %v, want X's %v", rec.Home, x.meshAddr)
	}

	// The attacker's capture: B's last Register (the test holds the
	// server key, so it can tell which datagram that is).
	mu.Lock()
	captured := lastRegister(t, id, b.id.ID(), sent)
	mu.Unlock()
	before := rejected(t, y.metrics)
	if _, err := b.conn.WriteToUDPAddrPort(captured, y.addr); err != nil {
		t.Fatal(err)
	}
	// Wait until Y has dealt with it: refused (counted), or taken (B's
	// record now names Y).
	for {
		r, err := y.reg.Get(ctx, b.id.ID())
		if err != nil {
			t.Fatal(err)
		}
		if r.Home == y.meshAddr {
			t.Fatalf("the replayed Register moved B's home to Y (%v): Punches for B now leave from Y's address, which B's NAT drops", r.Home)
		}
		if rejected(t, y.metrics)["register_not_newer"] > before["register_not_newer"] {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("Y neither refused nor took the replayed Register")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A (at Y) connects to B: the Punch goes through X and reaches B.
	r, err := a.client.ConnectPeer(ctx, b.id.ID())
	if err != nil {
		t.Fatalf("A to B after the replay: %v", err)
	}
	if pu := b.waitPunch(t); pu.TxID != r.TxID || pu.Peer.ID != a.id.ID() {
		t.Fatalf("B's punch %+v does not match A's reply %+v", pu, r)
	}
	if r, err := y.reg.Get(ctx, b.id.ID()); err != nil || r.Home != x.meshAddr {
		t.Fatalf("after the replay B's record is %+v (%v), want home X %v", r, err, x.meshAddr)
	}
}

// lastRegister returns the last of pkts that is a Register from peer,
// opened with the server identity.
func lastRegister(t *testing.T, server *crypto.Identity, peer crypto.PeerID, pkts [][]byte) []byte {
	t.Helper()
	k, err := server.SharedKey(peer)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(pkts) - 1; i >= 0; i-- {
		req, err := wire.ParseRequest(pkts[i])
		if err != nil {
			continue
		}
		plain, err := crypto.OpenBox(nil, req.Box, &req.Nonce, k)
		if err != nil || len(plain) < 9 {
			continue
		}
		if wire.MsgType(plain[0]) == wire.MsgRegister {
			t.Logf("captured B's Register stamped %v", time.UnixMilli(int64(binary.BigEndian.Uint64(plain[1:9]))).UTC())
			return pkts[i]
		}
	}
	t.Fatal(errors.New("B sent no Register"))
	return nil
}
