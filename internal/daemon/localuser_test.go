package daemon_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/localuser"

	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/daemon/daemontest"
)

// The test binary doubles as the other user's client: run with
// KEYMESH_OTHER_MODE set, it does one thing and prints "ok" or "refused: ...".
func TestMain(m *testing.M) {
	if mode := os.Getenv("KEYMESH_OTHER_MODE"); mode != "" {
		os.Exit(asOther(mode, os.Getenv("KEYMESH_OTHER_ARG")))
	}
	os.Exit(m.Run())
}

func asOther(mode, arg string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	report := func(err error) int {
		if err != nil {
			fmt.Println("refused:", err)
		} else {
			fmt.Println("ok")
		}
		return 0
	}
	switch mode {
	case "api":
		_, err := (&daemon.Client{Socket: arg}).Status(ctx)
		return report(err)
	case "socks":
		proxy, host, _ := strings.Cut(arg, "|")
		return report(socksEcho(proxy, host))
	case "tcp":
		return report(tcpEcho(arg))
	case "send-close":
		// Write and close at once: the data waits in the daemon's queue
		// while this end is gone.
		c, err := net.DialTimeout("tcp", arg, 5*time.Second)
		if err != nil {
			return report(err)
		}
		c.Write([]byte("one-way"))
		return report(c.Close())
	case "fake-daemon":
		// Another user's daemon at a path the victim's CLI is pointed at.
		if err := os.MkdirAll(filepath.Dir(arg), 0o755); err != nil {
			fmt.Println("setup:", err)
			return 1
		}
		os.Chmod(filepath.Dir(arg), 0o755)
		ln, err := net.Listen("unix", arg)
		if err != nil {
			fmt.Println("setup:", err)
			return 1
		}
		os.Chmod(arg, 0o777)
		fmt.Println("ready")
		http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"the-attacker"}`)
		}))
		return 0
	}
	fmt.Println("unknown mode", mode)
	return 1
}

// socksEcho does a SOCKS5 CONNECT to host:8080 and one exchange with the
// test node's daemontest.UpperAfterEOF service.
func socksEcho(proxy, host string) error {
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte{5, 1, 0})
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil {
		return fmt.Errorf("method reply: %w", err)
	}
	req := append([]byte{5, 1, 0, 3, byte(len(host))}, host...)
	c.Write(binary.BigEndian.AppendUint16(req, 8080))
	var head [4]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return fmt.Errorf("reply: %w", err)
	}
	if head[1] != 0 {
		return fmt.Errorf("reply code %d", head[1])
	}
	io.ReadFull(c, make([]byte, map[byte]int{1: 4, 4: 16}[head[3]]+2))
	c.Write([]byte("get"))
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "GET port 8080" {
		return fmt.Errorf("got %q, %v", got, err)
	}
	return nil
}

// tcpEcho sends "ping" and wants it back.
func tcpEcho(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("ping"))
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "ping" {
		return fmt.Errorf("got %q, %v", got, err)
	}
	return nil
}

// otherUser is a second local user (localuser.User) for one test.
type otherUser struct {
	t *testing.T
	*localuser.User
}

func newOtherUser(t *testing.T) *otherUser {
	t.Helper()
	return &otherUser{t: t, User: localuser.New(t)}
}

func (o *otherUser) command(ctx context.Context, mode, arg string) *exec.Cmd {
	return o.Command(ctx, "KEYMESH_OTHER_MODE="+mode, "KEYMESH_OTHER_ARG="+arg)
}

// run runs one client action as the other user and returns its verdict.
func (o *otherUser) run(mode, arg string) string {
	o.t.Helper()
	out, err := o.command(tctx(o.t), mode, arg).CombinedOutput()
	if err != nil {
		o.t.Fatalf("as the other user (%s): %v: %s", mode, err, out)
	}
	return strings.TrimSpace(string(out))
}

func serveSOCKS(t *testing.T, h *harness, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.srv.ServeSOCKS(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeSOCKS: %v", err)
		}
	})
	return ln.Addr().String()
}

// TestOtherUserRefused is issue 10's item 9: another local user (a real
// one, made for the test) can use neither the daemon's socket (even when
// its directory is opened up by mistake), nor the SOCKS5 proxy, nor a
// loopback forward listener; the owner can. And the owner's CLI does not
// talk to a socket another user put where it looks.
func TestOtherUserRefused(t *testing.T) {
	other := newOtherUser(t)
	h := startServer(t, daemon.Config{})
	p := testPeer(t)
	h.node.Remote(p.String(), daemontest.UpperAfterEOF)

	// The API socket, in its private directory.
	if _, err := h.client.Status(tctx(t)); err != nil {
		t.Fatalf("the owner's status: %v", err)
	}
	if got := other.run("api", h.client.Socket); !strings.HasPrefix(got, "refused") {
		t.Errorf("another user used the API socket: %s", got)
	}
	// The same with the directories opened up: the daemon asks the kernel
	// who connected (SO_PEERCRED).
	for d := filepath.Dir(h.client.Socket); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	os.Chmod(h.client.Socket, 0o666)
	if got := other.run("api", h.client.Socket); !strings.HasPrefix(got, "refused") {
		t.Errorf("another user used the API socket in an open directory: %s", got)
	}

	// SOCKS5 on IPv4 and IPv6 loopback.
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		proxy := serveSOCKS(t, h, addr)
		if err := socksEcho(proxy, p.String()); err != nil {
			t.Errorf("the owner through SOCKS5 %s: %v", proxy, err)
		}
		if got := other.run("socks", proxy+"|"+p.String()); !strings.HasPrefix(got, "refused") {
			t.Errorf("another user went through SOCKS5 %s as this node: %s", proxy, got)
		}
	}

	// A forward listener (what `peer forward` wraps its listener in).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	oln := daemon.OwnerOnly(ln, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { oln.Close() })
	go func() {
		for {
			c, err := oln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	if err := tcpEcho(ln.Addr().String()); err != nil {
		t.Errorf("the owner through the forward listener: %v", err)
	}
	if got := other.run("tcp", ln.Addr().String()); !strings.HasPrefix(got, "refused") {
		t.Errorf("another user went through the forward listener: %s", got)
	}

	// Another user's socket where the owner's CLI looks.
	fake := filepath.Join(os.TempDir(), "kmfake-"+strconv.Itoa(int(other.UID)), "peer.sock")
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(fake)) })
	ctx, cancel := context.WithCancel(context.Background())
	cmd := other.command(ctx, "fake-daemon", fake)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); strings.TrimSpace(line) != "ready" {
		t.Fatalf("the other user's daemon: %q", line)
	}
	st, err := (&daemon.Client{Socket: fake}).Status(tctx(t))
	if !errors.Is(err, daemon.ErrOtherUser) {
		t.Errorf("the CLI talked to another user's socket: status %+v, err %v", st, err)
	}
}

// TestOtherUserClosedSocketRefused is a race on the /proc/net/tcp lookup:
// another user connects to a loopback forward listener, writes and closes
// before the daemon accepts. The closed end lingers in the kernel's table
// as a socket of no process, listed with uid 0, so a daemon running as
// root took the other user's bytes for its own user's and carried them
// one way with the node's identity.
func TestOtherUserClosedSocketRefused(t *testing.T) {
	other := newOtherUser(t)
	if os.Geteuid() != 0 {
		t.Fatal("newOtherUser runs only as root")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	oln := daemon.OwnerOnly(ln, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { oln.Close() })
	if got := other.run("send-close", ln.Addr().String()); got != "ok" {
		t.Fatalf("the other user's client: %s", got)
	}
	// The attacker's end leaves FIN_WAIT1 once the daemon's kernel has
	// acknowledged its FIN (an attacker just waits a moment).
	port := ln.Addr().(*net.TCPAddr).Port
	listener := fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32([]byte{127, 0, 0, 1}), port)
	for deadline := time.Now().Add(5 * time.Second); ; {
		if clientEndState(t, listener) == "05" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the closed client end never reached FIN_WAIT2 (state %s)", clientEndState(t, listener))
		}
		time.Sleep(10 * time.Millisecond)
	}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(3 * time.Second))
	c, err := oln.Accept()
	if err == nil {
		b, _ := io.ReadAll(c)
		c.Close()
		t.Fatalf("a root daemon accepted another user's closed connection and read %q", b)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("accept: %v", err)
	}
}

// clientEndState is the /proc/net/tcp state of the socket connected to
// remote (hex address:port as the table prints it), or "".
func clientEndState(t *testing.T, remote string) string {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[2] == remote {
			return f[3]
		}
	}
	return ""
}
