// Package localuser gives tests a second local user: a throwaway system
// account (made with useradd, removed at cleanup) and a copy of the running
// test binary it may execute, so a test can prove what another user on the
// same host can and cannot do to a peer daemon.
package localuser

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/keymesh/keymesh/internal/testutil/ci"
)

// User is a throwaway system user and a copy of the test binary it can run.
type User struct {
	UID, GID uint32
	// Bin is a copy of the running test binary in a directory the user
	// may enter.
	Bin string
}

// New makes the user. It needs root; without root the test is skipped,
// or fails when CI=true.
func New(t *testing.T) *User {
	t.Helper()
	ci.NeedRoot(t, "makes a second user")
	var b [3]byte
	rand.Read(b[:])
	name := "kmt" + hex.EncodeToString(b[:])
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", name).Run() })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "kmbin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "other.test")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return &User{UID: uint32(uid), GID: uint32(gid), Bin: bin}
}

// Command runs the test binary as the user, from /, with only env and a
// PATH in its environment (the test's TestMain picks its mode from env).
func (u *User) Command(ctx context.Context, env ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, u.Bin)
	cmd.Dir = "/"
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.UID, Gid: u.GID}}
	return cmd
}
