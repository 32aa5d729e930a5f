//go:build linux

package scaleout_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/bintest"
	"github.com/keymesh/keymesh/internal/testutil/ci"

	"github.com/keymesh/keymesh/internal/testutil/syncbuf"
)

// binDir holds the binaries built once per test run (made in TestMain).
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keymesh-scaleout-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
)

// binaries builds cmd/rendezvous and cmd/relay once and returns their paths.
func binaries(t *testing.T) (rendezvous, relay string) {
	t.Helper()
	if testing.Short() {
		ci.Skip(t, "builds and runs the server binaries")
	}
	buildOnce.Do(func() {
		_, buildErr = bintest.Build(context.Background(), binDir)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "rendezvous"), filepath.Join(binDir, "relay")
}

// syncBuf is a buffer safe for one writer and many readers.
type syncBuf = syncbuf.Buffer

// proc is a server process owned by a test: killed in t.Cleanup, its
// output kept for assertions and shown when the test fails.
type proc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr syncBuf
	exited         chan struct{}
	waitErr        error
}

// startProc runs bin with args, without the caller's KEYMESH_* variables.
func startProc(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = cleanEnv()
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	// The kernel kills the server should the test binary die first.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s stdout:\n%s--- %s stderr (tail):\n%s", name, p.stdout.String(), name, tail(p.stderr.String(), 40))
		}
	})
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	if p.running() {
		_ = p.cmd.Process.Kill()
	}
	<-p.exited
}

// running reports whether the process has not exited.
func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and returns the exit error (nil for status 0), or an
// error when it does not exit within d.
func (p *proc) stop(d time.Duration) error {
	if !p.running() {
		return fmt.Errorf("%s had already exited: %v", p.name, p.waitErr)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.exited:
		return p.waitErr
	case <-time.After(d):
		return fmt.Errorf("%s did not exit within %v of SIGTERM", p.name, d)
	}
}

// waitOutput waits until re matches the process's stdout or stderr and
// returns the submatches.
func (p *proc) waitOutput(t *testing.T, stream string, re *regexp.Regexp, d time.Duration) []string {
	t.Helper()
	buf := &p.stdout
	if stream == "stderr" {
		buf = &p.stderr
	}
	deadline := time.Now().Add(d)
	for {
		if m := re.FindStringSubmatch(buf.String()); m != nil {
			return m
		}
		if !p.running() {
			t.Fatalf("%s exited (%v) before %s matched %v; stderr:\n%s", p.name, p.waitErr, stream, re, tail(p.stderr.String(), 20))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s did not match %v within %v; stderr:\n%s", p.name, stream, re, d, tail(p.stderr.String(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cleanEnv is bintest.CleanEnv.
func cleanEnv() []string { return bintest.CleanEnv() }

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n") + "\n"
}

// writeSecret writes a 32-byte hex secret file with mode 0600.
func writeSecret(t *testing.T, path string) {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, fmt.Appendf(nil, "%x\n", b), 0o600); err != nil {
		t.Fatal(err)
	}
}
