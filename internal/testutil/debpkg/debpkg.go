// Package debpkg makes sure a program from a Debian package is on the machine
// before a test uses it: it installs the package with apt-get when the program
// is missing and the test runs as root, and otherwise skips (or, under CI,
// fails) with a line that says what is missing and how to get it.
package debpkg

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/ci"
)

// installMu serialises apt-get within one test binary; dpkg's own lock
// serialises across binaries (apt-get waits for it with DPkg::Lock::Timeout).
var installMu sync.Mutex

// Require returns the path of program, installing Debian package pkg when the
// program is not on PATH. Without root it skips the test, saying so; when it
// cannot install under CI (CI=true) it fails the test, since CI must run it.
func Require(tb testing.TB, program, pkg string) string {
	tb.Helper()
	path, err := Ensure(context.Background(), program, pkg)
	if err == nil {
		return path
	}
	ci.Skip(tb, err.Error())
	return ""
}

// Ensure returns the path of program, installing Debian package pkg with
// apt-get when it is missing. It needs root to install.
func Ensure(ctx context.Context, program, pkg string) (string, error) {
	if p, err := exec.LookPath(program); err == nil {
		return p, nil
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("%s is not installed and installing it needs root: run `apt-get install %s` as root", program, pkg)
	}
	installMu.Lock()
	defer installMu.Unlock()
	if p, err := exec.LookPath(program); err == nil {
		return p, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	install := func() ([]byte, error) {
		cmd := exec.CommandContext(ctx, "apt-get", "-o", "DPkg::Lock::Timeout=120", "install", "-y", "--no-install-recommends", pkg)
		cmd.Env = env
		return cmd.CombinedOutput()
	}
	if _, err := install(); err != nil {
		upd := exec.CommandContext(ctx, "apt-get", "-o", "DPkg::Lock::Timeout=120", "update")
		upd.Env = env
		if out, err := upd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get update (to install %s): %w: %s", pkg, err, tail(out))
		}
		if out, err := install(); err != nil {
			return "", fmt.Errorf("apt-get install %s: %w: %s", pkg, err, tail(out))
		}
	}
	p, err := exec.LookPath(program)
	if err != nil {
		// Some packages put programs in sbin, which may be off PATH.
		for _, dir := range []string{"/usr/sbin/", "/sbin/", "/usr/bin/"} {
			if _, serr := os.Stat(dir + program); serr == nil {
				return dir + program, nil
			}
		}
		return "", fmt.Errorf("package %s installed but %s is still not found: %w", pkg, program, err)
	}
	return p, nil
}

func tail(b []byte) string {
	const max = 400
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}
