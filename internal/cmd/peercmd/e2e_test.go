package peercmd

// End-to-end tests with real processes: the rendezvous, the relay and
// `peer up` daemons on loopback, driven through the `peer` binary.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/testutil/ci"

	"github.com/keymesh/keymesh/internal/testutil/bintest"
)

// bins holds the binaries, built once per test binary (on first use, so
// that unit-test runs do not pay for it) and removed by TestMain.
var bins struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	if os.Getenv("KEYMESH_OTHER_MODE") == "tcp" {
		os.Exit(otherTCP(os.Getenv("KEYMESH_OTHER_ARG")))
	}
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// binaries builds peer, rendezvous and relay and returns their directory.
func binaries(t *testing.T) string {
	t.Helper()
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "keymesh-e2e-bin")
		if bins.err != nil {
			return
		}
		_, bins.err = bintest.Build(context.Background(), bins.dir)
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.dir
}

// cleanEnv is bintest.CleanEnv.
func cleanEnv() []string { return bintest.CleanEnv() }

// proc is a background process, stopped (SIGTERM, then SIGKILL) at the end
// of the test; its output is logged when the test fails.
type proc struct {
	name     string
	cmd      *exec.Cmd
	out, err syncBuffer
	done     chan struct{}
}

func startProc(t *testing.T, name string, stdin io.Reader, stdout io.Writer, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binaries(t), args[0]), args[1:]...)
	p.cmd.Env = cleanEnv()
	p.cmd.Stdin = stdin
	p.cmd.Stdout = &p.out
	if stdout != nil {
		p.cmd.Stdout = stdout
	}
	p.cmd.Stderr = &p.err
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s stdout:\n%s\n%s stderr:\n%s", name, tail(p.out.String()), name, tail(p.err.String()))
		}
	})
	return p
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("%s still running after %s", p.name, d)
		return -1
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return "..." + s[len(s)-4000:]
	}
	return s
}

// peerCmd runs the peer binary to completion (bounded by d).
func peerCmd(t *testing.T, d time.Duration, stdin io.Reader, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binaries(t), "peer"), args...)
	cmd.Env = cleanEnv()
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("peer %v: still running after %s; stderr: %s", args, d, errb.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("peer %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// mesh is a rendezvous server and a relay on loopback, and the peers
// started on them.
type mesh struct {
	t       *testing.T
	dir     string
	connect string // host:port#<server-id>
	ids     map[string]string
	socks   map[string]string
}

func newMesh(t *testing.T) *mesh {
	t.Helper()
	dir, err := os.MkdirTemp("", "kme") // short: Unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	m := &mesh{t: t, dir: dir, ids: map[string]string{}, socks: map[string]string{}}

	relay := startProc(t, "relay", nil, nil, "relay", "--dev", "--listen", "127.0.0.1:0", "--admin", "", "--log-format", "json")
	line := waitLine(t, &relay.err, `"relay ready"`, 10*time.Second)
	var ready struct{ UDP string }
	if err := json.Unmarshal([]byte(line), &ready); err != nil || ready.UDP == "" {
		t.Fatalf("relay ready line %q: %v", line, err)
	}
	rz := startProc(t, "rendezvous", nil, nil, "rendezvous", "--listen", "127.0.0.1:0", "--admin", "",
		"--key", filepath.Join(dir, "rz.key"), "--relay", ready.UDP)
	line = waitLine(t, &rz.out, "connect string: ", 10*time.Second)
	m.connect = strings.TrimSpace(strings.TrimPrefix(line, "connect string: "))
	return m
}

func (m *mesh) key(name string) string    { return filepath.Join(m.dir, name+".key") }
func (m *mesh) socket(name string) string { return filepath.Join(m.dir, name+".sock") }

// keygen makes the named peer's key and records its ID.
func (m *mesh) keygen(name string) string {
	code, out, errs := peerCmd(m.t, 10*time.Second, nil, "keygen", "--key", m.key(name))
	if code != 0 {
		m.t.Fatalf("keygen %s: %s", name, errs)
	}
	m.ids[name] = strings.Split(out, "\n")[0]
	return m.ids[name]
}

// up starts the named peer's daemon and waits until it is registered.
func (m *mesh) up(name string, extra ...string) *proc {
	m.t.Helper()
	args := append([]string{"peer", "up", "--server", m.connect, "--key", m.key(name), "--socket", m.socket(name),
		"--listen", "127.0.0.1:0", "--log-level", "debug"}, extra...)
	p := startProc(m.t, "peer "+name, nil, nil, args...)
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, out, _ := peerCmd(m.t, 20*time.Second, nil, "status", "--json", "--socket", m.socket(name))
		var st daemon.DaemonStatus
		if code == 0 && json.Unmarshal([]byte(out), &st) == nil && st.Registered {
			if st.ID != m.ids[name] {
				m.t.Fatalf("peer %s runs as %s, want %s", name, st.ID, m.ids[name])
			}
			return p
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("peer %s not registered within 20s", name)
		}
		select {
		case <-p.done:
			m.t.Fatalf("peer %s exited: %s", name, p.err.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (m *mesh) peer(name string, args ...string) (int, string, string) {
	m.t.Helper()
	return peerCmd(m.t, 30*time.Second, nil, append(args, "--socket", m.socket(name))...)
}

func pingLines(t *testing.T, out string) []pingLine {
	t.Helper()
	var lines []pingLine
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var p pingLine
		if err := json.Unmarshal([]byte(l), &p); err != nil {
			t.Fatalf("ping --json line %q: %v", l, err)
		}
		lines = append(lines, p)
	}
	return lines
}

func TestE2EDirect(t *testing.T) {
	if testing.Short() {
		ci.Skip(t, "end-to-end test: starts processes")
	}
	m := newMesh(t)
	a, b := m.keygen("a"), m.keygen("b")
	c := m.keygen("c")
	socksAddr := freeTCPAddr(t)
	m.up("a", "--allow", b, "--socks5", socksAddr)
	m.up("b", "--allow", a)
	pc := m.up("c", "--allow-any")
	bOverlay := mustOverlay(t, b)

	t.Run("ping by ID goes direct", func(t *testing.T) {
		code, out, errs := m.peer("a", "ping", b, "--json", "--until-direct", "--count", "20", "--interval", "100ms")
		if code != 0 {
			t.Fatalf("exit %d: %s\n%s", code, out, errs)
		}
		lines := pingLines(t, out)
		last := lines[len(lines)-1]
		if last.Path != "direct" || last.Peer != b || last.Overlay != bOverlay || !strings.HasPrefix(last.Remote, "127.0.0.1:") || last.RTTms <= 0 || last.Seq != len(lines) {
			t.Errorf("last reply %+v", last)
		}
		// The text form, by overlay address.
		code, out, errs = m.peer("a", "ping", bOverlay, "--count", "2", "--interval", "50ms")
		if code != 0 || strings.Count(out, "pong from "+b[:8]+" ("+bOverlay+") via direct 127.0.0.1:") != 2 {
			t.Errorf("ping by overlay: exit %d\n%s%s", code, out, errs)
		}
	})

	t.Run("status shows the direct path", func(t *testing.T) {
		code, out, _ := m.peer("a", "status", "--json")
		var st daemon.DaemonStatus
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
			t.Fatalf("exit %d: %s", code, out)
		}
		if st.ID != a || !st.Registered || st.Reflexive == "" || st.Relay == "" || st.SOCKS5 != socksAddr {
			t.Errorf("self: %+v", st)
		}
		found := false
		for _, p := range st.Peers {
			if p.ID == b {
				found = true
				if p.Path != "direct" || p.Overlay != bOverlay {
					t.Errorf("peer b: %+v", p)
				}
			}
		}
		if !found {
			t.Errorf("b not in status: %s", out)
		}
		code, out, _ = m.peer("a", "status")
		if code != 0 || !strings.Contains(out, b+"  peer  direct 127.0.0.1:") {
			t.Errorf("status table:\n%s", out)
		}
	})

	// A tiny HTTP service on B's side, exposed to peers.
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from b, path %s", r.URL.Path)
	}))
	defer svc.Close()
	svcPort := svc.Listener.Addr().(*net.TCPAddr).Port
	expose := startProc(t, "expose", nil, nil, "peer", "expose", fmt.Sprint(svcPort), "--socket", m.socket("b"))
	waitLine(t, &expose.out, "exposing 127.0.0.1:", 10*time.Second)

	t.Run("forward and expose", func(t *testing.T) {
		fwd := startProc(t, "forward", nil, nil, "peer", "forward", "0", fmt.Sprintf("%s:%d", b, svcPort), "--socket", m.socket("a"))
		line := waitLine(t, &fwd.out, "forwarding 127.0.0.1:", 10*time.Second)
		local := strings.Fields(line)[1]
		for i := range 3 {
			body := httpGet(t, &http.Client{Timeout: 10 * time.Second}, fmt.Sprintf("http://%s/f%d", local, i))
			if body != fmt.Sprintf("hello from b, path /f%d", i) {
				t.Errorf("through the forward: %q", body)
			}
		}
		fwd.stop()
	})

	t.Run("socks5", func(t *testing.T) {
		proxy, _ := url.Parse("socks5://" + socksAddr)
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxy)}}
		for _, host := range []string{b, b + ".keymesh", "[" + bOverlay + "]"} {
			body := httpGet(t, hc, fmt.Sprintf("http://%s:%d/s", host, svcPort))
			if body != "hello from b, path /s" {
				t.Errorf("via socks5 to %s: %q", host, body)
			}
		}
		// Destinations outside the mesh are refused.
		if resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/", svcPort)); err == nil {
			resp.Body.Close()
			t.Error("socks5 reached a non-mesh address")
		} else if !strings.Contains(err.Error(), "not allowed") {
			t.Errorf("non-mesh destination: %v, want a ruleset refusal", err)
		}
	})

	t.Run("a peer not allowed is refused with the reason", func(t *testing.T) {
		code, _, errs := m.peer("c", "ping", b, "--count", "1")
		if code != 1 || !strings.Contains(errs, "does not allow this peer") || !strings.Contains(errs, "--allow "+c) {
			t.Errorf("ping: exit %d, stderr %q", code, errs)
		}
		code, _, errs = peerCmd(t, 30*time.Second, strings.NewReader("hi"), "pipe", b, "--socket", m.socket("c"))
		if code != 1 || !strings.Contains(errs, "does not allow this peer") {
			t.Errorf("pipe: exit %d, stderr %q", code, errs)
		}
	})

	t.Run("a wrong server key is refused", func(t *testing.T) {
		host, _, _ := strings.Cut(m.connect, "#")
		m.keygen("d")
		start := time.Now()
		code, _, errs := peerCmd(t, 20*time.Second, nil, "up", "--server", host+"#"+a, "--key", m.key("d"),
			"--socket", m.socket("d"), "--listen", "127.0.0.1:0", "--register-timeout", "2s")
		if code != 1 || !strings.Contains(errs, "not registered with the rendezvous server") || !strings.Contains(errs, "server ID after # in the connect string is probably wrong") {
			t.Errorf("exit %d, stderr %q", code, errs)
		}
		if _, err := os.Stat(m.socket("d")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket left behind: %v", err)
		}
		t.Logf("refused after %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("SIGTERM stops the daemon and removes its socket", func(t *testing.T) {
		pc.cmd.Process.Signal(syscall.SIGTERM)
		if code := pc.wait(t, 10*time.Second); code != 0 {
			t.Errorf("exit %d after SIGTERM", code)
		}
		if _, err := os.Stat(m.socket("c")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket left behind: %v", err)
		}
	})
}

func TestE2ERelay100MB(t *testing.T) {
	if testing.Short() {
		ci.Skip(t, "end-to-end test: starts processes and moves 100 MB")
	}
	m := newMesh(t)
	a, b := m.keygen("a"), m.keygen("b")
	m.up("a", "--allow", b, "--no-direct")
	m.up("b", "--allow", a, "--no-direct")

	code, out, errs := m.peer("a", "ping", b, "--json", "--count", "2", "--interval", "50ms")
	if code != 0 {
		t.Fatalf("ping: exit %d: %s", code, errs)
	}
	for _, l := range pingLines(t, out) {
		if l.Path != "relay" {
			t.Errorf("ping with --no-direct: %+v, want relay", l)
		}
	}

	// 100 MB of pseudo-random data.
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	want := writeRandom(t, src, 100<<20)
	dst, err := os.Create(filepath.Join(dir, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()

	listen := startProc(t, "listen", nil, dst, "peer", "listen", "--socket", m.socket("b"))
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	start := time.Now()
	pipe := startProc(t, "pipe", in, nil, "peer", "pipe", b, "--socket", m.socket("a"))
	if code := pipe.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("pipe: exit %d: %s", code, pipe.err.String())
	}
	if code := listen.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("listen: exit %d: %s", code, listen.err.String())
	}
	el := time.Since(start)
	got := fileSHA256(t, dst.Name())
	if got != want {
		t.Fatalf("sha256 %x, want %x", got, want)
	}
	t.Logf("100 MiB through the relay in %s (%.1f MB/s)", el.Round(time.Millisecond), float64(100<<20)/el.Seconds()/1e6)

	code, out, _ = m.peer("a", "status", "--json")
	var st daemon.DaemonStatus
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Peers) != 1 || st.Peers[0].Path != "relay" {
		t.Errorf("status after the transfer: %s", out)
	}

	// The receiver dies mid-transfer: the sender must not report success.
	var recv countWriter
	listen = startProc(t, "listen2", nil, &recv, "peer", "listen", "--socket", m.socket("b"))
	in2, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in2.Close()
	pipe = startProc(t, "pipe2", in2, nil, "peer", "pipe", b, "--socket", m.socket("a"))
	deadline := time.Now().Add(20 * time.Second)
	for recv.n.Load() < 1<<20 {
		if time.Now().After(deadline) {
			t.Fatal("no data arrived within 20 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	listen.cmd.Process.Kill()
	code = pipe.wait(t, 30*time.Second)
	t.Logf("pipe to a killed receiver: exit %d: %s", code, strings.TrimSpace(pipe.err.String()))
	if code != 1 || !strings.Contains(pipe.err.String(), "stream failed") {
		t.Errorf("pipe to a receiver killed mid-transfer: exit %d, stderr %q", code, pipe.err.String())
	}
}

// countWriter counts what is written to it.
type countWriter struct{ n atomic.Int64 }

func (w *countWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return len(p), nil
}

func writeRandom(t *testing.T, path string, n int) [32]byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{1, 2, 3})
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	if _, err := io.CopyN(w, r, int64(n)); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func fileSHA256(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func mustOverlay(t *testing.T, id string) string {
	t.Helper()
	p, err := crypto.ParsePeerID(id)
	if err != nil {
		t.Fatal(err)
	}
	return p.OverlayAddr().String()
}

// freeTCPAddr returns a loopback address with a port free a moment ago.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpGet(t *testing.T, hc *http.Client, u string) string {
	t.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		t.Errorf("GET %s: %v", u, err)
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("GET %s: %v", u, err)
	}
	return string(b)
}
