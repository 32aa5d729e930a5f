package turnrelay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pion/stun/v4"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/testutil/ci"
	"github.com/keymesh/keymesh/internal/testutil/coturn"
	"github.com/keymesh/keymesh/internal/testutil/debpkg"

	"github.com/keymesh/keymesh/internal/testutil/bintest"

	"github.com/keymesh/keymesh/internal/testutil/syncbuf"
)

// lab is a few network namespaces wired to a "relay" namespace by veth
// pairs, with no default route anywhere: whatever the relay sends can only
// reach the namespaces the test made.
type lab struct {
	t      *testing.T
	prefix string
	names  []string
	links  int
}

func requireLab(t *testing.T) {
	t.Helper()
	if testing.Short() {
		ci.Skip(t, "network namespace test")
	}
	_, err := exec.LookPath("ip")
	if os.Geteuid() != 0 || err != nil {
		ci.Skipf(t, "needs root and iproute2 (ip) for network namespaces: euid %d, %v", os.Geteuid(), err)
	}
}

func newLab(t *testing.T) *lab {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	l := &lab{t: t, prefix: "kt" + hex.EncodeToString(b)}
	t.Cleanup(func() {
		for _, ns := range l.names {
			exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	return l
}

func (l *lab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// netns makes namespace <prefix><name> with loopback up.
func (l *lab) netns(name string) string {
	ns := l.prefix + name
	l.ip("netns", "add", ns)
	l.names = append(l.names, ns)
	l.ip("-n", ns, "link", "set", "lo", "up")
	return ns
}

// wire joins namespaces a and b with a veth pair, addresses aAddr and bAddr
// (prefixes) on each end.
func (l *lab) wire(a, aAddr, b, bAddr string) {
	l.t.Helper()
	l.links++
	ea, eb := fmt.Sprintf("%sv%da", l.prefix, l.links), fmt.Sprintf("%sv%db", l.prefix, l.links)
	l.ip("link", "add", ea, "type", "veth", "peer", "name", eb)
	l.ip("link", "set", ea, "netns", a)
	l.ip("link", "set", eb, "netns", b)
	l.ip("-n", a, "addr", "add", aAddr, "dev", ea)
	l.ip("-n", b, "addr", "add", bAddr, "dev", eb)
	l.ip("-n", a, "link", "set", ea, "up")
	l.ip("-n", b, "link", "set", eb, "up")
}

// in runs fn on a thread inside namespace ns; sockets fn opens stay there.
func in(t *testing.T, ns string, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		f, err := os.Open(filepath.Join("/var/run/netns", ns))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// recorder counts what reaches a UDP and a TCP port in a namespace; with
// echo it sends UDP datagrams back.
type recorder struct {
	name     string
	addr     netip.AddrPort
	udp, tcp atomic.Int64
}

func record(t *testing.T, ns, name string, addr netip.AddrPort, echo bool) *recorder {
	t.Helper()
	r := &recorder{name: name, addr: addr}
	var pc net.PacketConn
	var ln net.Listener
	in(t, ns, func() (err error) {
		if pc, err = net.ListenPacket("udp4", addr.String()); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", addr.String())
		return err
	})
	t.Cleanup(func() { pc.Close(); ln.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			r.udp.Add(1)
			if echo {
				pc.WriteTo(buf[:n], from)
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.tcp.Add(1)
			c.Close()
		}
	}()
	return r
}

// buildRelay builds cmd/relay (with the other commands) into a temporary
// directory.
func buildRelay(t *testing.T) string { t.Helper(); return bintest.BuildT(t).Relay }

// syncBuf is syncbuf.Buffer.
type syncBuf = syncbuf.Buffer

// TestLabTURNCannotReachInternalHosts is the open-proxy attack with real
// parts: the relay binary runs in a namespace whose only neighbours are a
// client, a "metadata service" at 169.254.169.254, a "private" host at
// 10.9.0.2 and a "public" peer at 203.0.113.5; listeners on the metadata
// and private hosts, on the relay's loopback and on a port of the relay's
// own public address record anything that arrives. coturn's
// turnutils_uclient, over UDP and TCP, with channels and with Send, and an
// RFC 6062 TCP allocation's Connect cannot reach any of them; the public
// peer works, and so do two clients relaying to each other's allocations
// on the relay's own address.
func TestLabTURNCannotReachInternalHosts(t *testing.T) {
	requireLab(t)
	debpkg.Require(t, coturn.ClientProgram, coturn.Package)
	bin := buildRelay(t)
	l := newLab(t)
	r, c, m, p, u := l.netns("r"), l.netns("c"), l.netns("m"), l.netns("p"), l.netns("u")
	l.wire(r, "198.51.100.1/24", c, "198.51.100.2/24")
	l.wire(r, "169.254.0.1/16", m, "169.254.169.254/16")
	l.wire(r, "10.9.0.1/24", p, "10.9.0.2/24")
	l.wire(r, "203.0.113.1/24", u, "203.0.113.5/24")
	for ns, via := range map[string]string{m: "169.254.0.1", p: "10.9.0.1", u: "203.0.113.1"} {
		l.ip("-n", ns, "route", "add", "198.51.100.0/24", "via", via)
	}

	metadata := record(t, m, "metadata 169.254.169.254", netip.MustParseAddrPort("169.254.169.254:80"), true)
	private := record(t, p, "private 10.9.0.2", netip.MustParseAddrPort("10.9.0.2:6379"), true)
	loopback := record(t, r, "relay loopback", netip.MustParseAddrPort("127.0.0.1:9091"), true)
	ownPort := record(t, r, "relay's own address, port 9999", netip.MustParseAddrPort("198.51.100.1:9999"), true)
	public := record(t, u, "public 203.0.113.5", netip.MustParseAddrPort("203.0.113.5:3480"), true)
	refused := []*recorder{metadata, private, loopback, ownPort}

	const secret = "lab-turn-secret-0123456789abcdef"
	secretFile := filepath.Join(t.TempDir(), "turn.secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	var relayOut syncBuf
	relay := exec.CommandContext(ctx, "ip", "netns", "exec", r, bin, "--dev", "--listen", "127.0.0.1:3479", "--admin", "",
		"--turn-listen", "198.51.100.1:3478", "--turn-tcp-listen", "198.51.100.1:3478", "--turn-secret-file", secretFile,
		// Every client here is one address; the per-source allocation
		// rate has its own test.
		"--turn-allocation-rate", "-1", "--log-format", "json")
	relay.Stdout, relay.Stderr = &relayOut, &relayOut
	relay.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	relay.Cancel = func() error { return syscall.Kill(-relay.Process.Pid, syscall.SIGTERM) }
	relay.WaitDelay = 3 * time.Second
	if err := relay.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-relay.Process.Pid, syscall.SIGTERM)
		relay.Wait()
		if t.Failed() {
			t.Logf("relay output:\n%s", relayOut.String())
		}
	})
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(relayOut.String(), `"relay ready"`); {
		if time.Now().After(deadline) {
			t.Fatalf("relay not ready:\n%s", relayOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	server := netip.MustParseAddrPort("198.51.100.1:3478")

	var runs atomic.Int64
	uclient := func(t *testing.T, name string, cfg coturn.ClientConfig) (coturn.Report, string, error) {
		// A user name per run: each leaves allocations behind, counted
		// against its user's quota.
		cfg.Server, cfg.Netns, cfg.Secret, cfg.User = server, c, secret, fmt.Sprintf("%s%d", name, runs.Add(1))
		if cfg.Messages == 0 {
			cfg.Messages = 10
		}
		cfg.Size, cfg.Interval = 120, 10*time.Millisecond
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		defer ccancel()
		rep, out, err := coturn.RunClient(cctx, cfg)
		return rep, string(out), err
	}

	t.Run("uclient to refused peers", func(t *testing.T) {
		for _, target := range refused {
			for _, mode := range []struct {
				name      string
				tcp, send bool
			}{{"udp channel", false, false}, {"udp send", false, true}, {"tcp channel", true, false}, {"tcp send", true, true}} {
				_, out, err := uclient(t, "attacker", coturn.ClientConfig{Peer: target.addr, TCP: mode.tcp, Send: mode.send, Messages: 3})
				t.Logf("%s via %s: err %v; %s", target.name, mode.name, err, lastLine(out))
			}
		}
	})

	t.Run("tcp allocation connect to refused peers", func(t *testing.T) {
		user, pass := crypto.TURNCredentials([]byte(secret), "tcp-attacker", time.Hour, time.Now())
		var rc *rawClient
		in(t, c, func() error {
			conn, err := net.DialTimeout("tcp4", server.String(), 5*time.Second)
			if err != nil {
				return err
			}
			t.Cleanup(func() { conn.Close() })
			rc = &rawClient{t: t, conn: conn, tcp: true, user: user, pass: pass}
			return nil
		})
		rc.allocateRaw(6)
		for _, target := range refused {
			pa := &net.UDPAddr{IP: target.addr.Addr().AsSlice(), Port: int(target.addr.Port())}
			rsp := rc.request(stun.MethodConnect, peerAddr(pa))
			code := errCode(rsp)
			// The relay's own public address passes the permission check
			// (other clients' allocations live there); the dial to a port
			// no allocation holds is refused (447).
			if target == ownPort && code == int(stun.CodeConnTimeoutOrFailure) {
				continue
			}
			if code != int(stun.CodeForbidden) {
				t.Errorf("Connect %s: %v (code %d), want 403", target.name, rsp.Type, code)
			}
		}
		// The public peer is reachable over TCP.
		pa := &net.UDPAddr{IP: public.addr.Addr().AsSlice(), Port: int(public.addr.Port())}
		if rsp := rc.request(stun.MethodConnect, peerAddr(pa)); rsp.Type.Class != stun.ClassSuccessResponse {
			t.Errorf("Connect to the public peer: %v (code %d)", rsp.Type, errCode(rsp))
		}
	})

	t.Run("public peer works", func(t *testing.T) {
		for _, tcp := range []bool{false, true} {
			rep, out, err := uclient(t, fmt.Sprintf("legit-tcp%v", tcp), coturn.ClientConfig{Peer: public.addr, TCP: tcp})
			if err != nil || rep.Received == 0 {
				t.Errorf("tcp=%v: received %d of %d, err %v\n%s", tcp, rep.Received, rep.Sent, err, out)
			}
		}
	})

	t.Run("clients relay to each other on the relay's address", func(t *testing.T) {
		rep, out, err := uclient(t, "pair", coturn.ClientConfig{ClientToClient: true, Clients: 2})
		if err != nil || rep.Received == 0 {
			t.Errorf("received %d of %d, err %v\n%s", rep.Received, rep.Sent, err, out)
		}
	})

	// The relay answers in order; give what a failing defence sent the
	// time of one more round trip through it before counting.
	if _, _, err := uclient(t, "last", coturn.ClientConfig{Peer: public.addr}); err != nil {
		t.Logf("last public run: %v", err)
	}
	for _, rec := range refused {
		if n, k := rec.udp.Load(), rec.tcp.Load(); n != 0 || k != 0 {
			t.Errorf("%s received %d datagrams and %d connections through the relay", rec.name, n, k)
		}
	}
	if public.udp.Load() == 0 || public.tcp.Load() == 0 {
		t.Errorf("the public peer got %d datagrams and %d connections; want some of each", public.udp.Load(), public.tcp.Load())
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
