package daemon_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/daemon/daemontest"
)

func TestDefaultSocketPath(t *testing.T) {
	env := map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}
	if got := daemon.DefaultSocketPath(func(k string) string { return env[k] }, 1000); got != "/run/user/1000/keymesh/peer.sock" {
		t.Errorf("with XDG_RUNTIME_DIR: %s", got)
	}
	want := filepath.Join(os.TempDir(), "keymesh-1000", "peer.sock")
	if got := daemon.DefaultSocketPath(func(string) string { return "" }, 1000); got != want {
		t.Errorf("without: %s, want %s", got, want)
	}
}

func TestListenSocket(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(shortDir(t), "sub")
	path := filepath.Join(dir, "peer.sock")
	ln, err := daemon.ListenSocket(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket mode %v, want a 0600 socket", st.Mode())
	}
	dst, _ := os.Stat(dir)
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", dst.Mode().Perm())
	}
	first := ln
	go func() {
		for {
			c, err := first.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// A live daemon is not replaced.
	if _, err := daemon.ListenSocket(ctx, path); !errors.Is(err, daemon.ErrDaemonRunning) {
		t.Errorf("second listen: %v, want daemon.ErrDaemonRunning", err)
	}
	ln.Close()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}

	// A stale socket (its daemon died without removing it) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln, err = daemon.ListenSocket(ctx, path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	ln.Close()

	// A regular file in the way is not removed.
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := daemon.ListenSocket(ctx, path); err == nil {
		t.Error("listened over a regular file")
	}
}

func TestListenSocketOpenDir(t *testing.T) {
	dir := shortDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := daemon.ListenSocket(context.Background(), filepath.Join(dir, "peer.sock")); !errors.Is(err, daemon.ErrUnsafeDir) {
		t.Errorf("err = %v, want daemon.ErrUnsafeDir", err)
	}
	st, _ := os.Stat(dir)
	if st.Mode().Perm() != 0o755 {
		t.Errorf("an existing directory's mode was changed to %v", st.Mode().Perm())
	}
}

func TestSplice(t *testing.T) {
	a1, a2 := daemontest.TCPPair(t)
	b1, b2 := daemontest.TCPPair(t)
	done := make(chan error, 1)
	go func() { done <- daemon.Splice(a2, b1) }()
	a1.Write([]byte("ping"))
	daemon.CloseWrite(a1)
	got, _ := io.ReadAll(b2) // EOF arrives: the half-close passed through
	if string(got) != "ping" {
		t.Fatalf("b2 read %q", got)
	}
	b2.Write([]byte("pong"))
	b2.Close()
	got, _ = io.ReadAll(a1)
	if string(got) != "pong" {
		t.Fatalf("a1 read %q", got)
	}
	if err := <-done; err != nil {
		t.Errorf("Splice: %v", err)
	}
}
