// Package docs_test keeps docs/ honest: it builds the keymesh binaries,
// checks docs/flags.md against what their --help prints (regenerate it with
// KEYMESH_UPDATE_DOCS=1 go test ./docs -run TestFlagsDoc), checks that the
// KEYMESH_* variables really configure them, and checks the servers'
// operational surface: /healthz, /readyz, /metrics, --version and JSON logs.
package docs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/bintest"
)

// testVersion is linked into the binaries, so --version and the build-info
// metric can be checked exactly.
const testVersion = "v0.0.0-docstest"

// binDir holds the binaries TestMain builds.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "keymesh-docs-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := bintest.Build(ctx, dir, "-X github.com/keymesh/keymesh/internal/obs.version="+testVersion); err != nil {
		fmt.Fprintln(os.Stderr, "building the binaries:", err)
		return 1
	}
	binDir = dir
	return m.Run()
}

// bin is the path of a built binary.
func bin(name string) string { return filepath.Join(binDir, name) }

// baseEnv is a clean environment for the binaries: no KEYMESH_* or XDG_*
// variables from the caller, no TMPDIR, and HOME set to home.
func baseEnv(home string, extra ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home}, extra...)
}

// result is what a finished command printed.
type result struct {
	stdout, stderr string
	code           int
	pid            int
}

// runCmd runs a binary to completion (at most 20 s) in dir with env.
func runCmd(t *testing.T, dir string, env []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(name), args...)
	cmd.Dir, cmd.Env = dir, env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if cmd.Process != nil {
		r.pid = cmd.Process.Pid
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		r.code = ee.ExitCode()
	default:
		t.Fatalf("%s %s: %v (stderr: %s)", name, strings.Join(args, " "), err, errb.String())
	}
	return r
}

// lines collects a stream's lines as they arrive.
type lines struct {
	mu  sync.Mutex
	buf []string
}

func (l *lines) collect(r io.Reader) {
	var part []byte
	b := make([]byte, 4096)
	for {
		n, err := r.Read(b)
		part = append(part, b[:n]...)
		for {
			i := bytes.IndexByte(part, '\n')
			if i < 0 {
				break
			}
			l.mu.Lock()
			l.buf = append(l.buf, string(part[:i]))
			l.mu.Unlock()
			part = part[i+1:]
		}
		if err != nil {
			if len(part) > 0 {
				l.mu.Lock()
				l.buf = append(l.buf, string(part))
				l.mu.Unlock()
			}
			return
		}
	}
}

func (l *lines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.buf...)
}

// proc is a running server process.
type proc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr lines
	done           chan struct{}
	wg             sync.WaitGroup
}

// startProc starts a binary in the background; t.Cleanup kills it if the
// test has not stopped it.
func startProc(t *testing.T, dir string, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin(name), args...), done: make(chan struct{})}
	p.cmd.Dir, p.cmd.Env = dir, env
	outR, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p.wg.Add(2)
	go func() { defer p.wg.Done(); p.stdout.collect(outR) }()
	go func() { defer p.wg.Done(); p.stderr.collect(errR) }()
	go func() {
		p.wg.Wait() // the pipes must be drained before Wait closes them
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitLine waits (at most 10 s) for a line of stdout or stderr for which
// match returns true, and returns it.
func (p *proc) waitLine(t *testing.T, stderr bool, what string, match func(string) bool) string {
	t.Helper()
	src := &p.stdout
	if stderr {
		src = &p.stderr
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, l := range src.all() {
			if match(l) {
				return l
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before printing %s\nstdout:\n%s\nstderr:\n%s", p.name, p.cmd.ProcessState,
				what, strings.Join(p.stdout.all(), "\n"), strings.Join(p.stderr.all(), "\n"))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not print %s within 10 s\nstdout:\n%s\nstderr:\n%s", p.name, what,
				strings.Join(p.stdout.all(), "\n"), strings.Join(p.stderr.all(), "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop sends SIGTERM and returns the exit code; a process still running
// after 5 s fails the test.
func (p *proc) stop(t *testing.T) int {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s did not stop within 5 s of SIGTERM", p.name)
	}
	return p.cmd.ProcessState.ExitCode()
}
