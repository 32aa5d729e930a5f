package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/mesh"
	"github.com/keymesh/keymesh/internal/relayclient"
	"github.com/keymesh/keymesh/internal/rzclient"
	"github.com/keymesh/keymesh/internal/testutil/ci"
	"github.com/keymesh/keymesh/internal/testutil/redistest"
	"github.com/keymesh/keymesh/internal/wire"

	"github.com/keymesh/keymesh/internal/testutil/bintest"
)

// testTimeout bounds the whole test, builds included.
const testTimeout = 3 * time.Minute

var (
	buildOnce              sync.Once
	buildDir               string
	rdvBinary, relayBinary string
	buildErr               error
)

// binaries builds the rendezvous and relay commands once for the test
// binary's run (TestMain removes them).
func binaries(t *testing.T) (rendezvous, relay string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "keymesh-mesh-e2e-")
		if buildErr != nil {
			return
		}
		var bins bintest.Binaries
		bins, buildErr = bintest.Build(context.Background(), buildDir)
		rdvBinary, relayBinary = bins.Rendezvous, bins.Relay
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return rdvBinary, relayBinary
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// freePort returns a UDP port free on ip and the same TCP port free too.
func freePort(t *testing.T, ip netip.Addr) uint16 {
	t.Helper()
	for range 20 {
		u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			t.Fatal(err)
		}
		p := u.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		u.Close()
		l, err := net.Listen("tcp", netip.AddrPortFrom(ip, p).String())
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}

func writeFile(t *testing.T, path, text string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// meshServer is what the instances of one server share: the rendezvous'
// identity, and its key, peer secret, cookie secret and ticket keys in files.
type meshServer struct {
	id                                          *crypto.Identity
	dir, key, peerSecret, cookieSecret, tickets string
	ticketLine                                  string
}

func newMeshServer(t *testing.T) *meshServer {
	t.Helper()
	s := &meshServer{dir: t.TempDir(), ticketLine: crypto.NewTicketKeyLine(1)}
	var err error
	if s.id, err = crypto.GenerateIdentity(nil); err != nil {
		t.Fatal(err)
	}
	s.key = filepath.Join(s.dir, "server.key")
	if err := crypto.WriteKeyFile(s.key, s.id); err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	s.peerSecret = writeFile(t, filepath.Join(s.dir, "peer-secret"), fmt.Sprintf("%x\n", secret))
	s.cookieSecret = writeFile(t, filepath.Join(s.dir, "cookie-secret"), "00112233445566778899aabbccddeeff\n")
	s.tickets = writeFile(t, filepath.Join(s.dir, "ticket-keys"), s.ticketLine)
	return s
}

// rendezvousArgs are the flags of instance name's rendezvous, with Redis at
// redis (host:port).
func (s *meshServer) rendezvousArgs(name string, listen, mesh netip.AddrPort, admin, redis string) []string {
	return []string{"--listen", listen.String(), "--key", s.key, "--admin", admin,
		"--registry", "redis", "--redis", "redis://" + redis + "/0",
		"--cookie-secret-file", s.cookieSecret, "--instance", "rdv-" + name,
		"--mesh-listen", mesh.String(), "--peer-secret-file", s.peerSecret}
}

// relayArgs are the flags of instance name's relay, number n in the mesh of
// peers (the relays' --mesh-peers).
func (s *meshServer) relayArgs(name string, n int, listen, mesh netip.AddrPort, admin, peers string) []string {
	return []string{"--listen", listen.String(), "--ticket-key-file", s.tickets, "--admin", admin,
		"--key", filepath.Join(s.dir, "relay-"+name+".key"),
		"--instance", fmt.Sprint(n), "--mesh-listen", mesh.String(),
		"--mesh-peers", peers, "--peer-secret-file", s.peerSecret}
}

// proc is a running server process; its output is kept for failures.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
}

func start(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	return startCmd(t, name, exec.Command(bin, args...))
}

// startCmd starts cmd with a clean environment (no KEYMESH_* variables).
func startCmd(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd}
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	exited := make(chan struct{})
	go func() { _ = p.cmd.Wait(); pw.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// metric reads one sample (the line starting with name, labels included)
// from an admin endpoint's /metrics; -1 when absent.
func metric(t *testing.T, admin, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return -1
}

func waitMetric(t *testing.T, admin, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := metric(t, admin, name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s at %s = %v, want %v", name, admin, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// instance is one region's pair of servers, all on one loopback address of
// its own, so that whatever an instance sends is told apart by its source.
type instance struct {
	ip                          netip.Addr
	rdv, rdvMesh, relay, relayM netip.AddrPort
	rdvAdmin, relayAdmin        string
}

func newInstance(t *testing.T, ip netip.Addr) *instance {
	port := func() netip.AddrPort { return netip.AddrPortFrom(ip, freePort(t, ip)) }
	return &instance{
		ip: ip, rdv: port(), rdvMesh: port(), relay: port(), relayM: port(),
		rdvAdmin: port().String(), relayAdmin: port().String(),
	}
}

// peer is a peer's UDP socket with a rendezvous client; it remembers the
// source of every Punch it gets.
type peer struct {
	id      *crypto.Identity
	conn    *net.UDPConn
	client  *rzclient.Client
	punches chan netip.AddrPort
}

func newPeer(t *testing.T, ctx context.Context, server netip.AddrPort, serverKey crypto.PeerID) *peer {
	t.Helper()
	return newPeerOn(t, ctx, udp(t), server, serverKey)
}

// newPeerOn runs a peer on conn (which it closes when the test ends).
func newPeerOn(t *testing.T, ctx context.Context, conn *net.UDPConn, server netip.AddrPort, serverKey crypto.PeerID) *peer {
	t.Helper()
	t.Cleanup(func() { conn.Close() })
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{id: id, conn: conn, punches: make(chan netip.AddrPort, 16)}
	var from netip.AddrPort // source of the frame being handled (read loop only)
	p.client, err = rzclient.New(rzclient.Config{
		Identity: id, Server: server, ServerKey: serverKey, AllowAny: true,
		Send: func(b []byte, to netip.AddrPort) error {
			_, err := conn.WriteToUDPAddrPort(b, to)
			return err
		},
		OnPunch: func(wire.Punch) { p.punches <- from },
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, src, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			from = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
			p.client.HandleFrame(buf[:n], from)
		}
	}()
	go func() { _ = p.client.Run(ctx) }()
	return p
}

func (p *peer) waitRegistered(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !p.client.Status().Registered {
		if time.Now().After(deadline) {
			t.Fatalf("peer %s never registered: %+v", p.id.ID().Short(), p.client.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHomeInstance runs two instances ("regions") X and Y, each a
// rendezvous and a relay with its mesh, sharing Redis. B registers and
// binds at Y; A's requests land on X. The Punch for B and A's relayed
// packet for B must reach B from Y's addresses (without the mesh they come
// from X: the sources B's NAT would drop behind a managed front door). A
// stranger's forged mesh messages are dropped and send nothing.
func TestHomeInstance(t *testing.T) {
	if testing.Short() {
		ci.Skip(t, "builds and runs the servers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	redis := redistest.Start(t)
	rdvBin, relayBin := binaries(t)
	srv := newMeshServer(t)

	// Two loopback addresses of their own (127.r.1.1 and 127.r.2.1).
	var r [1]byte
	_, _ = rand.Read(r[:])
	r[0] = 10 + r[0]%200
	x := newInstance(t, netip.AddrFrom4([4]byte{127, r[0], 1, 1}))
	y := newInstance(t, netip.AddrFrom4([4]byte{127, r[0], 2, 1}))
	relayPeers := fmt.Sprintf("1=%v,2=%v", x.relayM, y.relayM)
	for i, in := range []*instance{x, y} {
		name := []string{"x", "y"}[i]
		start(t, "rendezvous-"+name, rdvBin, srv.rendezvousArgs(name, in.rdv, in.rdvMesh, in.rdvAdmin, redis.Addr())...)
		start(t, "relay-"+name, relayBin, srv.relayArgs(name, i+1, in.relay, in.relayM, in.relayAdmin, relayPeers)...)
	}

	t.Run("punch leaves from B's home", func(t *testing.T) {
		b := newPeer(t, ctx, y.rdv, srv.id.ID())
		a := newPeer(t, ctx, x.rdv, srv.id.ID())
		b.waitRegistered(t)
		a.waitRegistered(t)
		reply, err := a.client.ConnectPeer(ctx, b.id.ID())
		if err != nil || !reply.Found {
			t.Fatalf("connect: %+v, %v", reply, err)
		}
		select {
		case from := <-b.punches:
			if from != y.rdv {
				t.Fatalf("B got the Punch from %v, want its home instance %v (A's Connect landed on %v)", from, y.rdv, x.rdv)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("B got no Punch")
		}
		waitMetric(t, x.rdvAdmin, "keymesh_mesh_sent_total", 1)
		waitMetric(t, y.rdvAdmin, "keymesh_mesh_accepted_total", 1)
	})

	t.Run("relayed packet leaves from B's home", func(t *testing.T) {
		a, b := udp(t), udp(t)
		bctx, bcancel := context.WithTimeout(ctx, 30*time.Second)
		defer bcancel()
		bid, _ := crypto.GenerateIdentity(nil)
		binding, err := relayclient.Bind(bctx, b, net.UDPAddrFromAddrPort(y.relay), bid)
		if err != nil {
			t.Fatalf("bind at Y: %v", err)
		}
		frame := wire.AppendRelaySend(nil, binding.Ticket, 7, []byte("to B via its home"))
		buf := make([]byte, 2048)
		for {
			if _, err := a.WriteToUDPAddrPort(frame, x.relay); err != nil {
				t.Fatal(err)
			}
			_ = b.SetReadDeadline(time.Now().Add(time.Second))
			n, from, err := b.ReadFromUDPAddrPort(buf)
			if err != nil {
				if bctx.Err() != nil {
					t.Fatal("B got no relayed packet")
				}
				continue // the relays may still be starting
			}
			tag, payload, err := wire.ParseData(buf[:n])
			if err != nil || buf[0] != wire.TypeRelayed || tag != 7 || string(payload) != "to B via its home" {
				t.Fatalf("B got %x, want the Relayed frame", buf[:n])
			}
			if from != y.relay {
				t.Fatalf("B got the relayed packet from %v, want its home relay %v (A sent to %v)", from, y.relay, x.relay)
			}
			break
		}
		waitMetric(t, y.relayAdmin, "keymesh_mesh_accepted_total", 1)
	})

	t.Run("forged mesh messages are dropped", func(t *testing.T) {
		victim := udp(t)
		target := victim.LocalAddr().(*net.UDPAddr).AddrPort()
		// A stranger who guessed the format but not the secret.
		forger, err := mesh.NewKey([]byte("not the deployment's peer secret"))
		if err != nil {
			t.Fatal(err)
		}
		s := udp(t)
		forge := func(to netip.AddrPort, kind mesh.Kind, payload []byte) {
			b, err := forger.Append(nil, &mesh.Message{Kind: kind, Time: time.Now().UnixMilli(), Sender: 1, Seq: 1, Dst: target, Payload: payload})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.WriteToUDPAddrPort(b, to); err != nil {
				t.Fatal(err)
			}
		}
		forge(y.rdvMesh, mesh.KindPunch, []byte{0x20, 1, 2, 3})
		forge(y.relayM, mesh.KindRelayed, []byte{wire.TypeRelayed, wire.Version, 0, 0, 0, 0, 0, 0, 0, 0})
		// The rendezvous mesh has no source list: the tag refuses it. The
		// relays know each other's addresses: a stranger's source is
		// refused before its tag is even checked.
		waitMetric(t, y.rdvAdmin, `keymesh_mesh_dropped_total{reason="bad_tag"}`, 1)
		waitMetric(t, y.relayAdmin, `keymesh_mesh_dropped_total{reason="stranger"}`, 1)
		_ = victim.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, from, err := victim.ReadFromUDPAddrPort(make([]byte, 64)); err == nil {
			t.Fatalf("a forged message made an instance send %d bytes from %v", n, from)
		}
	})
}

func udp(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
