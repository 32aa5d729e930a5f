package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/nat"
	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/internal/pathsock"
	"github.com/keymesh/keymesh/internal/rendezvous"
	"github.com/keymesh/keymesh/internal/testutil/ci"
	"github.com/keymesh/keymesh/internal/testutil/servertest"
	"github.com/keymesh/keymesh/internal/wire"
)

// labMesh is a rendezvous server and a relay on a natlab server host.
type labMesh struct {
	server string // connect string
}

func startLabMesh(t *testing.T, ctx context.Context, host *natlab.Host) *labMesh {
	t.Helper()
	rconn, err := host.ListenUDP(ctx, netip.AddrPortFrom(host.Addr, 3479))
	if err != nil {
		t.Fatal(err)
	}
	zconn, err := host.ListenUDP(ctx, netip.AddrPortFrom(host.Addr, 3478))
	if err != nil {
		rconn.Close()
		t.Fatal(err)
	}
	srv, err := servertest.Serve(rconn, zconn, func(c *rendezvous.Config) {
		c.RateLimit = rendezvous.RateLimit{PerSecond: -1}
		c.Logger = testLogger(t)
	})
	if err != nil {
		rconn.Close()
		zconn.Close()
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return &labMesh{server: srv.Connect}
}

// labNode starts a node whose sockets (the main one and the birthday ones)
// live in host's namespace.
func (m *labMesh) labNode(t *testing.T, ctx context.Context, host *natlab.Host) *Node {
	t.Helper()
	seed := make([]byte, 32)
	rand.Read(seed)
	addr := host.CurrentAddr()
	conn, err := host.ListenUDP(ctx, netip.AddrPortFrom(addr, 0))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Seed: seed, Server: m.server, AllowAny: true, Logger: testLogger(t)}
	nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := newNode(nctx, cfg, func(pc *pathsock.Config) {
		pc.Conn = conn
		pc.Interfaces = func() ([]netip.Addr, error) { return []netip.Addr{addr}, nil }
		pc.ListenExtra = func() (*net.UDPConn, error) {
			return host.ListenUDP(context.Background(), netip.AddrPortFrom(addr, 0))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// echoCheck writes n bytes on c and reads them back.
func echoCheck(t *testing.T, c net.Conn, n int) {
	t.Helper()
	msg := make([]byte, n)
	rand.Read(msg)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go c.Write(msg)
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Errorf("echo over the birthday path: %v", err)
	}
}

func nodePath(n *Node, peer crypto.PeerID) (pathsock.PeerStatus, bool) {
	return n.sock.Peer(peer)
}

// TestBirthdayPunchingInLab measures birthday-paradox punching between an
// easy NAT (port-restricted, double) and a symmetric one, in both dial
// directions: at least 90% of the trials must end on a direct path.
func TestBirthdayPunchingInLab(t *testing.T) {
	ci.NeedRoot(t, "builds network namespaces with real Linux NATs (natlab)")
	trials := 10
	if v, err := strconv.Atoi(os.Getenv("KEYMESH_BIRTHDAY_TRIALS")); err == nil && v > 0 {
		trials = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lab, err := natlab.New(ctx, natlab.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	srv, err := lab.AddServer(ctx, "rz")
	if err != nil {
		t.Fatal(err)
	}
	hard, err := lab.AddSite(ctx, "hard", natlab.Symmetric)
	if err != nil {
		t.Fatal(err)
	}
	easy, err := lab.AddSite(ctx, "easy", natlab.PortRestricted)
	if err != nil {
		t.Fatal(err)
	}
	dbl, err := lab.AddSite(ctx, "dbl", natlab.Double)
	if err != nil {
		t.Fatal(err)
	}
	m := startLabMesh(t, ctx, srv)

	for _, easySite := range []*natlab.Site{easy, dbl} {
		name := string(easySite.Type) + "<->symmetric"
		var direct, onBirthday int
		var times []time.Duration
		var probes []uint64
		for i := range trials {
			hn := m.labNode(t, ctx, hard.Host())
			en := m.labNode(t, ctx, easySite.Host())
			if got := hn.natBehaviour(); got != wire.NATAddrPortDepend {
				t.Errorf("%s: symmetric side reports NAT %d, want %d", name, got, wire.NATAddrPortDepend)
			}
			if got := en.natBehaviour(); got != wire.NATEndpointIndep {
				t.Errorf("%s: easy side reports NAT %d, want %d", name, got, wire.NATEndpointIndep)
			}
			a, b := en, hn
			if i%2 == 1 {
				a, b = hn, en
			}
			go func() {
				c, err := b.Listen().Accept()
				if err != nil {
					return
				}
				defer c.Close()
				io.Copy(c, c)
			}()
			start := time.Now()
			dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
			c, err := a.Dial(dctx, b.ID())
			dcancel()
			if err != nil {
				t.Fatalf("%s trial %d: dial: %v", name, i, err)
			}
			ok := false
			var took time.Duration
			for time.Since(start) < 8*time.Second {
				pa, _ := nodePath(a, b.me)
				pb, _ := nodePath(b, a.me)
				if pa.Path == pathsock.PathDirect && pb.Path == pathsock.PathDirect {
					ok, took = true, time.Since(start)
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			if ok {
				// The hard side sends from its winning birthday socket; the
				// others are closed; data flows both ways on the path.
				// The spray may also hit the mapping of the hard side's
				// main socket (it probes the easy side too): direct as well.
				if st, _ := hn.sock.Peer(en.me); st.Birthday {
					onBirthday++
				}
				closing := time.Now()
				for hn.sock.BirthdaySocketsOpen() > 1 && time.Since(closing) < 2*time.Second {
					time.Sleep(5 * time.Millisecond)
				}
				if k := hn.sock.BirthdaySocketsOpen(); k > 1 {
					t.Errorf("%s trial %d: %d birthday sockets still open after the punch, want 1", name, i, k)
				}
				sent := hn.sock.Stats().DirectSent.Load()
				echoCheck(t, c, 64<<10)
				if hn.sock.Stats().DirectSent.Load() == sent {
					t.Errorf("%s trial %d: no data went out on the direct path", name, i)
				}
			}
			sprayed := en.sock.Stats().BirthdayProbes.Load()
			remote, _ := nodePath(en, hn.me)
			t.Logf("%s trial %d (dialer %s): direct=%v after %v, %d probes sprayed, %d sockets opened, easy side reaches %s",
				name, i, map[bool]string{true: "easy", false: "hard"}[a == en], ok, took.Round(time.Millisecond),
				sprayed, hn.sock.Stats().BirthdaySockets.Load(), remote.Remote)
			if ok {
				direct++
				times = append(times, took)
				probes = append(probes, sprayed)
			}
			c.Close()
			hn.Close()
			en.Close()
		}
		slices.Sort(times)
		slices.Sort(probes)
		var medT time.Duration
		var medP uint64
		if len(times) > 0 {
			medT, medP = times[len(times)/2], probes[len(probes)/2]
		}
		t.Logf("%s: %d of %d direct (%d on a birthday socket); median time to direct %v, median probes %d (sockets %d, at most %d probes at %d/s)",
			name, direct, trials, onBirthday, medT.Round(time.Millisecond), medP, nat.BirthdaySockets, nat.BirthdayProbes, nat.BirthdayRate)
		if direct*10 < trials*9 {
			t.Errorf("%s: only %d of %d trials went direct, want at least 90%%", name, direct, trials)
		}
	}
}
