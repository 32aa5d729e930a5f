// Package bintest builds keymesh's three commands (cmd/rendezvous, cmd/relay,
// cmd/peer) for the tests and lab tools that run them as processes: one `go
// build` into a directory, with the build cache, from anywhere inside the
// module. It is the one place that runs `go build`; a test package builds
// once (Shared, or its own sync.Once around Build) and starts every process
// from there.
package bintest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Binaries are the paths of the three commands a lab runs.
type Binaries struct {
	Rendezvous, Relay, Peer string
}

// commands are the packages Build compiles, relative to the module root.
var commands = []string{"rendezvous", "relay", "peer"}

// Build compiles cmd/rendezvous, cmd/relay and cmd/peer of the module that
// holds the current directory into dir (which must be outside the
// repository: a temporary directory) with one `go build`, using the build
// cache. ldflags, when given, are passed as -ldflags.
func Build(ctx context.Context, dir string, ldflags ...string) (Binaries, error) {
	goBin, err := GoTool()
	if err != nil {
		return Binaries{}, err
	}
	root, err := moduleRoot(ctx, goBin)
	if err != nil {
		return Binaries{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Binaries{}, fmt.Errorf("bintest: build dir: %w", err)
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if len(ldflags) > 0 {
		args = append(args, "-ldflags", strings.Join(ldflags, " "))
	}
	for _, c := range commands {
		args = append(args, "./cmd/"+c)
	}
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return Binaries{}, fmt.Errorf("bintest: go build ./cmd/...: %w\n%s", err, bytes.TrimSpace(out))
	}
	return Prebuilt(dir)
}

// Prebuilt returns the binaries already in dir (built by Build or `make
// build`), checking that all three are there.
func Prebuilt(dir string) (Binaries, error) {
	b := Binaries{
		Rendezvous: filepath.Join(dir, "rendezvous"),
		Relay:      filepath.Join(dir, "relay"),
		Peer:       filepath.Join(dir, "peer"),
	}
	for _, p := range []string{b.Rendezvous, b.Relay, b.Peer} {
		st, err := os.Stat(p)
		if err != nil {
			return Binaries{}, fmt.Errorf("bintest: binary %s: %w", p, err)
		}
		if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
			return Binaries{}, fmt.Errorf("bintest: %s is not an executable file", p)
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Binaries{}, err
	}
	if abs != dir {
		return Prebuilt(abs)
	}
	return b, nil
}

// GoTool finds the go command: on the PATH, else in GOROOT.
func GoTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	for _, root := range []string{os.Getenv("GOROOT"), "/usr/local/go"} {
		if root == "" {
			continue
		}
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("bintest: the go command is not on the PATH (needed to build the binaries)")
}

// moduleRoot returns the directory of the go.mod governing the current
// directory.
func moduleRoot(ctx context.Context, goBin string) (string, error) {
	out, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("bintest: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("bintest: not inside the keymesh module (run from the repository)")
	}
	return filepath.Dir(mod), nil
}

var shared struct {
	once sync.Once
	dir  string
	bins Binaries
	err  error
}

// Shared builds the binaries the first time a test of this process asks,
// into a temporary directory, and returns the same ones afterwards. A
// package that uses it removes the directory with RemoveShared in its
// TestMain.
func Shared(t testing.TB) Binaries {
	t.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "keymesh-bin-")
		if shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		shared.bins, shared.err = Build(ctx, shared.dir)
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.bins
}

// RemoveShared removes what Shared built.
func RemoveShared() {
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
}

// BuildT builds the binaries into t's temporary directory, failing t when
// that fails.
func BuildT(t testing.TB) Binaries {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b, err := Build(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// CleanEnv is this process's environment without KEYMESH_* variables, for
// a binary a test starts: the caller's settings must not configure it.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYMESH_") {
			env = append(env, kv)
		}
	}
	return env
}

// BuildPackage compiles one main package pkg (an import path the module's
// go.mod provides, such as golang.zx2c4.com/wireguard for wireguard-go) into
// the file out, from the module's root.
func BuildPackage(ctx context.Context, out, pkg string) error {
	goBin, err := GoTool()
	if err != nil {
		return err
	}
	root, err := moduleRoot(ctx, goBin)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("bintest: go build %s: %w\n%s", pkg, err, bytes.TrimSpace(b))
	}
	return nil
}
