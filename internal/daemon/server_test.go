package daemon_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/daemon/daemontest"

	"github.com/keymesh/keymesh/internal/testutil/wait"
)

type harness struct {
	node   *daemontest.Node
	srv    *daemon.Server
	client *daemon.Client
}

// shortDir is a temporary directory with a path short enough for a Unix
// socket (t.TempDir's can pass the 108-byte limit).
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "kmd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func startServer(t *testing.T, cfg daemon.Config) *harness {
	t.Helper()
	fn := daemontest.New(t)
	if cfg.Node == nil {
		cfg.Node = fn
	}
	sock := filepath.Join(shortDir(t), "api", "peer.sock")
	cfg.Socket = sock
	srv, err := daemon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := daemon.ListenSocket(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		srv.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return &harness{node: fn, srv: srv, client: &daemon.Client{Socket: sock}}
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStatus(t *testing.T) {
	h := startServer(t, daemon.Config{})
	seen := time.Now().Add(-3 * time.Second).UTC().Truncate(time.Millisecond)
	h.node.SetStatus(daemon.Status{ID: "self", Overlay: "fd4b::1", Reflexive: "203.0.113.7:4000", Registered: true,
		Peers: []daemon.PeerStatus{{ID: "b", Overlay: "fd4b::2", Path: "direct", Remote: "127.0.0.1:9", RTTms: 0.4, LastSeen: seen}}})
	if _, err := h.srv.Expose(8080, true); err != nil {
		t.Fatal(err)
	}
	st, err := h.client.Status(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !st.Registered || st.Reflexive != "203.0.113.7:4000" || st.Socket != h.client.Socket {
		t.Errorf("status = %+v", st)
	}
	if len(st.Peers) != 1 || st.Peers[0].Path != "direct" || !st.Peers[0].LastSeen.Equal(seen) {
		t.Errorf("peers = %+v", st.Peers)
	}
	if len(st.Exposed) != 1 || st.Exposed[0] != 8080 {
		t.Errorf("exposed = %v", st.Exposed)
	}
}

func TestPing(t *testing.T) {
	h := startServer(t, daemon.Config{})
	res, err := h.client.Ping(tctx(t), "b", 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Peer != "b" || res.Path != "direct" || res.RTTms != 1.5 || res.RTT != 1500*time.Microsecond {
		t.Errorf("ping = %+v", res)
	}

	h.node.Slow("slow")
	_, err = h.client.Ping(tctx(t), "slow", 50*time.Millisecond)
	var ae *daemon.APIError
	if !errors.As(err, &ae) || ae.Code != http.StatusGatewayTimeout {
		t.Errorf("slow ping: err = %v, want a 504 daemon.APIError", err)
	}

	h.node.SetPingErr(errors.New("peer b refused the session: not in its allow list"))
	_, err = h.client.Ping(tctx(t), "b", 0)
	if !errors.As(err, &ae) || ae.Code != http.StatusBadGateway || !strings.Contains(ae.Msg, "not in its allow list") {
		t.Errorf("refused ping: err = %v, want the node's reason", err)
	}
	if _, err := h.client.Ping(tctx(t), "", 0); err == nil || !strings.Contains(err.Error(), "missing peer") {
		t.Errorf("empty peer: err = %v", err)
	}
}

func TestNoDaemon(t *testing.T) {
	c := &daemon.Client{Socket: filepath.Join(shortDir(t), "none.sock")}
	_, err := c.Status(tctx(t))
	if !errors.Is(err, daemon.ErrNoDaemon) || !strings.Contains(err.Error(), "peer up") {
		t.Errorf("err = %v, want daemon.ErrNoDaemon saying how to start one", err)
	}
}

func TestDialHalfClose(t *testing.T) {
	h := startServer(t, daemon.Config{})
	h.node.Remote("b", daemontest.UpperAfterEOF)
	s, err := h.client.Dial(tctx(t), "b", 7)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	payload := bytes.Repeat([]byte("abc"), 100000)
	go func() {
		s.Write(payload)
		s.CloseWrite()
	}()
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.ToUpper(string(payload)) + " port 7"
	if string(got) != want {
		t.Errorf("got %d bytes, want %d", len(got), len(want))
	}
}

func TestDialRefused(t *testing.T) {
	h := startServer(t, daemon.Config{})
	_, err := h.client.Dial(tctx(t), "x", 0)
	var ae *daemon.APIError
	if !errors.As(err, &ae) || ae.Code != http.StatusBadGateway || !strings.Contains(ae.Msg, "not in its allow list") {
		t.Errorf("err = %v, want the node's refusal", err)
	}
}

func TestAccept(t *testing.T) {
	h := startServer(t, daemon.Config{})
	// The stream arrives before anyone listens: it waits for `peer listen`.
	remote := h.node.Incoming(0)
	s, err := h.client.Accept(tctx(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	remote.Write([]byte("hello"))
	daemon.CloseWrite(remote)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v", got, err)
	}
	s.Write([]byte("bye"))
	s.CloseWrite()
	remote.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err = io.ReadAll(remote)
	if err != nil || string(got) != "bye" {
		t.Fatalf("remote read %q, %v", got, err)
	}
}

func TestAcceptHoldExpires(t *testing.T) {
	h := startServer(t, daemon.Config{AcceptHold: 50 * time.Millisecond})
	remote := h.node.Incoming(0)
	remote.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := remote.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read = %v, want the stream closed after the hold", err)
	}
}

func TestAcceptOtherPort(t *testing.T) {
	h := startServer(t, daemon.Config{})
	ctx, cancel := context.WithCancel(tctx(t))
	got := make(chan error, 1)
	go func() {
		s, err := h.client.Accept(ctx, 7000)
		if err == nil {
			s.Close()
		}
		got <- err
	}()
	waitFor(t, func() bool { return h.node.Listener(7000) != nil })
	// An expose of a port someone listens on is refused.
	if _, err := h.srv.Expose(7000, true); !errors.Is(err, daemon.ErrPortInUse) {
		t.Errorf("expose of a listened port: %v, want daemon.ErrPortInUse", err)
	}
	cancel()
	<-got
	// The listener goes once its last caller left.
	waitFor(t, func() bool { return h.node.Listener(7000).IsClosed() })
}

func TestExpose(t *testing.T) {
	h := startServer(t, daemon.Config{})
	svc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	go func() {
		for {
			c, err := svc.Accept()
			if err != nil {
				return
			}
			go daemontest.UpperAfterEOF(c, 1)
		}
	}()
	port := uint16(svc.Addr().(*net.TCPAddr).Port)

	closer, err := h.client.Expose(tctx(t), port, false)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := h.client.Status(tctx(t))
	if len(st.Exposed) != 1 || st.Exposed[0] != port {
		t.Errorf("exposed = %v, want [%d]", st.Exposed, port)
	}
	remote := h.node.Incoming(port)
	remote.Write([]byte("through the mesh"))
	daemon.CloseWrite(remote)
	remote.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(remote)
	if err != nil || string(got) != "THROUGH THE MESH port 1" {
		t.Fatalf("got %q, %v", got, err)
	}
	// Closing the foreground expose ends it.
	closer.Close()
	waitFor(t, func() bool { return h.node.Listener(port).IsClosed() })

	// Background: stays until unexposed.
	if _, err := h.client.Expose(tctx(t), port, true); err != nil {
		t.Fatal(err)
	}
	if h.node.Listener(port).IsClosed() {
		t.Fatal("background expose not listening")
	}
	if err := h.client.Unexpose(tctx(t), port); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return h.node.Listener(port).IsClosed() })
	if err := h.client.Unexpose(tctx(t), port); err == nil {
		t.Error("second unexpose succeeded")
	}
	if _, err := h.client.Expose(tctx(t), 0, true); err == nil {
		t.Error("expose of port 0 succeeded")
	}
}

func TestServerCloseEndsStreams(t *testing.T) {
	h := startServer(t, daemon.Config{})
	h.node.Remote("b", func(c net.Conn, _ uint16) { io.Copy(io.Discard, c) })
	s, err := h.client.Dial(tctx(t), "b", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h.srv.Close()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read after Close = %v, want EOF", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	wait.For(t, 5*time.Second, "the condition", cond)
}

func TestStreamResult(t *testing.T) {
	h := startServer(t, daemon.Config{})
	h.node.Remote("b", daemontest.UpperAfterEOF)
	// A reset: the remote takes a little, then aborts the connection.
	h.node.Remote("r", func(c net.Conn, _ uint16) {
		io.ReadFull(c, make([]byte, 10))
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})

	s, err := h.client.Dial(tctx(t), "b", 0)
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte("x"))
	s.CloseWrite()
	io.ReadAll(s)
	s.Close()
	if err := h.client.StreamResult(tctx(t), s.ID); err != nil {
		t.Errorf("clean stream: %v", err)
	}
	if err := h.client.StreamResult(tctx(t), s.ID); err == nil {
		t.Error("an outcome was given twice")
	}

	s, err = h.client.Dial(tctx(t), "r", 0)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			if _, err := s.Write(make([]byte, 64<<10)); err != nil {
				return
			}
		}
	}()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.ReadAll(s)
	s.Close()
	var se *daemon.StreamError
	if err := h.client.StreamResult(tctx(t), s.ID); !errors.As(err, &se) {
		t.Errorf("reset stream: err = %v, want a StreamError", err)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "keymesh_test_total", Help: "A test counter."})
	c.Add(3)
	reg.MustRegister(c)
	h := startServer(t, daemon.Config{Metrics: reg})
	got, err := h.client.Metrics(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "keymesh_test_total 3\n") {
		t.Errorf("GET /v1/metrics = %q, want keymesh_test_total 3", got)
	}
	var ae *daemon.APIError
	if _, err := startServer(t, daemon.Config{}).client.Metrics(tctx(t)); !errors.As(err, &ae) || ae.Code != 404 {
		t.Errorf("GET /v1/metrics without Config.Metrics: %v, want 404", err)
	}
}

func TestProfiles(t *testing.T) {
	h := startServer(t, daemon.Config{Profiles: true})
	prof, err := h.client.CPUProfile(tctx(t), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// A pprof profile is a gzipped protocol buffer.
	if len(prof) < 2 || prof[0] != 0x1f || prof[1] != 0x8b {
		t.Errorf("GET /v1/debug/pprof/profile = %d bytes beginning %x, want a gzipped profile", len(prof), prof[:min(len(prof), 2)])
	}
	var ae *daemon.APIError
	if _, err := startServer(t, daemon.Config{}).client.CPUProfile(tctx(t), time.Second); !errors.As(err, &ae) || ae.Code != 404 {
		t.Errorf("GET /v1/debug/pprof/profile without Config.Profiles: %v, want 404", err)
	}
}
