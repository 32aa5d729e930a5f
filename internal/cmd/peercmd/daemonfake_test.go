package peercmd

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/daemon/daemontest"
)

// fakeDaemon runs the real daemon API over a fake node; it tests the
// CLI's side of the API (output formats, exit codes), not the data path.
func fakeDaemon(t *testing.T) (*daemontest.Node, *daemon.Server, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "kmc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "peer.sock")
	n := daemontest.New(t)
	srv, err := daemon.New(daemon.Config{Node: n, Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := daemon.ListenSocket(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); srv.Close(); <-done })
	return n, srv, sock
}

func TestStatusCommand(t *testing.T) {
	n, _, sock := fakeDaemon(t)
	b := newID(t)
	n.SetStatus(daemon.Status{ID: "selfid", Overlay: "fd4b::1", Reflexive: "203.0.113.9:41641", Registered: true, Server: "127.0.0.1:3478",
		Peers: []daemon.PeerStatus{{ID: b.String(), Overlay: b.OverlayAddr().String(), Path: "direct", Remote: "127.0.0.1:5000", RTTms: 0.42, LastSeen: time.Now().Add(-2 * time.Second)}}})
	code, out, errs := run(t, context.Background(), "", "status", "--socket", sock)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"fd4b::1", "selfid", "registered; nat-facing 203.0.113.9:41641; server 127.0.0.1:3478",
		b.String(), "direct 127.0.0.1:5000; rtt 0.42ms; last seen 2s ago"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = run(t, context.Background(), "", "status", "--json", "--socket", sock)
	var st daemon.DaemonStatus
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || !st.Registered || len(st.Peers) != 1 || st.Peers[0].Path != "direct" {
		t.Errorf("status --json: exit %d, %s", code, out)
	}
}

func TestNoDaemonCommand(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, args := range [][]string{{"status"}, {"ping", newID(t).String()}, {"pipe", newID(t).String()}, {"listen"}} {
		code, _, errs := run(t, context.Background(), "", append(args, "--socket", sock)...)
		if code != 1 || !strings.Contains(errs, "no peer daemon is running") || strings.Count(errs, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
}

func TestPingCommand(t *testing.T) {
	n, _, sock := fakeDaemon(t)
	b := newID(t).String()
	start := time.Now()
	code, out, errs := run(t, context.Background(), "", "ping", b, "--count", "2", "--interval", "200ms", "--socket", sock)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if el := time.Since(start); el < 200*time.Millisecond || el > 2*time.Second {
		t.Errorf("2 pings 200ms apart took %s", el)
	}
	want := "pong from " + b[:8] + " (fd4b::2) via direct 127.0.0.1:9 in 1.50ms\n"
	if out != want+want {
		t.Errorf("stdout %q, want twice %q", out, want)
	}
	code, out, _ = run(t, context.Background(), "", "ping", b, "--count", "3", "--interval", "1ms", "--json", "--socket", sock)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 {
		t.Fatalf("--json: exit %d, %q", code, out)
	}
	for i, l := range lines {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatal(err)
		}
		if v["seq"] != float64(i+1) || v["peer"] != b || v["overlay"] != "fd4b::2" || v["path"] != "direct" || v["remote"] != "127.0.0.1:9" || v["rtt_ms"] != 1.5 {
			t.Errorf("line %d: %v", i, v)
		}
	}

	n.SetPingErr(errors.New("peer " + b[:8] + " refused the session: this peer is not in its allow list"))
	start = time.Now()
	code, out, errs = run(t, context.Background(), "", "ping", b, "--count", "5", "--socket", sock)
	if code != 1 || out != "" || !strings.Contains(errs, "not in its allow list") || strings.Count(errs, "\n") != 1 {
		t.Errorf("refused: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("a refusal did not end the pings at once")
	}
	code, out, _ = run(t, context.Background(), "", "ping", b, "--json", "--socket", sock)
	if code != 1 || !strings.Contains(out, `"error":"peer `) || !strings.Contains(out, `"seq":1`) {
		t.Errorf("refused --json: exit %d, %q", code, out)
	}
	n.SetPingErr(nil)

	// Timeouts are reported and the pings go on.
	slow := newID(t).String()
	n.Slow(slow)
	code, out, errs = run(t, context.Background(), "", "ping", "--count", "2", "--interval", "1ms", "--timeout", "50ms", "--socket", sock, "--", slow)
	if code != 1 || out != "" || strings.Count(errs, "no reply from "+slow[:8]+" within 50ms") != 2 {
		t.Errorf("unanswered: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestPipeCommand(t *testing.T) {
	n, _, sock := fakeDaemon(t)
	b := newID(t).String()
	n.Remote(b, daemontest.UpperAfterEOF)
	code, out, errs := run(t, context.Background(), "hello mesh", "pipe", b, "--port", "9", "--socket", sock)
	if code != 0 || out != "HELLO MESH port 9" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
	// The remote closes its side first: the whole of stdin still goes.
	c := newID(t).String()
	got := make(chan int, 1)
	n.Remote(c, func(conn net.Conn, _ uint16) {
		daemon.CloseWrite(conn)
		b, _ := io.ReadAll(conn)
		got <- len(b)
		conn.Close()
	})
	big := strings.Repeat("x", 8<<20)
	code, out, errs = run(t, context.Background(), big, "pipe", c, "--socket", sock)
	if code != 0 || out != "" {
		t.Errorf("pipe to an early closer: exit %d, %q, %q", code, out, errs)
	}
	if n := <-got; n != len(big) {
		t.Errorf("remote got %d bytes, want %d", n, len(big))
	}

	code, _, errs = run(t, context.Background(), "x", "pipe", newID(t).String(), "--socket", sock)
	if code != 1 || !strings.Contains(errs, "refused") {
		t.Errorf("refused pipe: exit %d, %q", code, errs)
	}
}

func TestListenCommand(t *testing.T) {
	n, _, sock := fakeDaemon(t)
	remote := n.Incoming(0)
	go func() {
		remote.Write([]byte("from afar"))
		daemon.CloseWrite(remote)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, out, errs := run(t, ctx, "reply", "listen", "--socket", sock)
	if code != 0 || out != "from afar" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
	remote.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(remote)
	if string(got) != "reply" {
		t.Errorf("remote got %q", got)
	}
}

func TestForwardAndExposeCommands(t *testing.T) {
	n, _, sock := fakeDaemon(t)
	b := newID(t).String()
	n.Remote(b, daemontest.UpperAfterEOF)
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() { done <- Main(ctx, []string{"forward", "--socket", sock, "0", b + ":8080"}, nil, &out, &errb) }()
	line := waitLine(t, &out, "forwarding 127.0.0.1:", 5*time.Second)
	addr := strings.Fields(line)[1]
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("tcp"))
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, _ := io.ReadAll(c)
		c.Close()
		if string(got) != "TCP port 8080" {
			t.Errorf("forwarded: got %q", got)
		}
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("forward exit %d: %s", code, errb.String())
	}

	code, out2, errs := run(t, context.Background(), "", "expose", "--bg", "8081", "--socket", sock)
	if code != 0 || !strings.Contains(out2, "exposing 127.0.0.1:8081") {
		t.Errorf("expose --bg: exit %d, %q %q", code, out2, errs)
	}
	if l := n.Listener(8081); l == nil || l.IsClosed() {
		t.Error("port 8081 not exposed")
	}
	code, _, _ = run(t, context.Background(), "", "expose", "--off", "8081", "--socket", sock)
	if code != 0 {
		t.Errorf("expose --off: exit %d", code)
	}
	code, _, errs = run(t, context.Background(), "", "expose", "--off", "8081", "--socket", sock)
	if code != 1 || !strings.Contains(errs, "not exposed") {
		t.Errorf("second expose --off: exit %d, %q", code, errs)
	}

	// Foreground expose lasts while the command runs.
	ctx, cancel = context.WithCancel(context.Background())
	var eout syncBuffer
	go func() { done <- Main(ctx, []string{"expose", "8082", "--socket", sock}, nil, &eout, &errb) }()
	waitLine(t, &eout, "exposing 127.0.0.1:8082", 5*time.Second)
	if l := n.Listener(8082); l == nil || l.IsClosed() {
		t.Error("port 8082 not exposed")
	}
	cancel()
	<-done
	deadline := time.Now().Add(5 * time.Second)
	for !n.Listener(8082).IsClosed() {
		if time.Now().After(deadline) {
			t.Fatal("foreground expose outlived its command")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
