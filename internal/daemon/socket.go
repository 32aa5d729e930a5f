package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// DefaultSocketPath is where the daemon's API socket lives unless told
// otherwise: $XDG_RUNTIME_DIR/keymesh/peer.sock, or /tmp/keymesh-<uid>/peer.sock
// when XDG_RUNTIME_DIR is not set.
func DefaultSocketPath(getenv func(string) string, uid int) string {
	if d := getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "keymesh", "peer.sock")
	}
	return filepath.Join(os.TempDir(), "keymesh-"+strconv.Itoa(uid), "peer.sock")
}

// ListenSocket opens the API socket at path. It makes the directory (mode
// 0700) and refuses one that another user owns; it replaces a stale socket
// left by a daemon that died, refuses to start beside a live one, and makes
// the socket mode 0600. Closing the listener removes the socket file.
func ListenSocket(ctx context.Context, path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if err := privateDir(dir); err != nil {
		return nil, err
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("socket %s: a file that is not a socket is in the way; remove it or pick another --socket", path)
		}
		d := net.Dialer{Timeout: time.Second}
		if c, err := d.DialContext(ctx, "unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s: %w (stop it first, or give this one another --socket)", path, ErrDaemonRunning)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on socket: %w", err)
	}
	ul := ln.(*net.UnixListener)
	if err := os.Chmod(path, 0o600); err != nil {
		ul.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return ul, nil
}

// privateDir makes dir (mode 0700) if missing. An existing directory must be
// one the current user owns, with no access for group or others: the daemon
// never loosens or tightens a directory it did not make.
func privateDir(dir string) error {
	_, err := os.Lstat(dir)
	created := errors.Is(err, fs.ErrNotExist)
	if created {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("socket directory: %w", err)
		}
		// The umask may have taken bits away; make it exactly 0700.
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("socket directory: %w", err)
		}
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("socket directory %s is not a directory: %w", dir, ErrUnsafeDir)
	}
	if owner, ok := fileOwner(st); ok && owner != os.Geteuid() {
		return fmt.Errorf("socket directory %s belongs to uid %d, not to you (uid %d): %w; pick a --socket in a directory of your own", dir, owner, os.Geteuid(), ErrUnsafeDir)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("socket directory %s has mode %#o: %w; run `chmod 700 %s` or pick a --socket in a private directory", dir, st.Mode().Perm(), ErrUnsafeDir, dir)
	}
	return nil
}

// checkSocketFile checks, before the CLI talks to it, that the socket at
// path is the current user's, in a directory that is the user's or root's
// and that nobody else can write to (unless it is sticky, like /tmp):
// another local user must not be able to put a daemon of theirs there.
func checkSocketFile(path string) error {
	uid := os.Geteuid()
	dir := filepath.Dir(path)
	dst, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if owner, ok := fileOwner(dst); ok && owner != uid && owner != 0 {
		return fmt.Errorf("socket directory %s belongs to uid %d, not to you (uid %d): %w; another user may have made it; not talking to a daemon there", dir, owner, uid, ErrOtherUser)
	}
	if dst.Mode().Perm()&0o022 != 0 && dst.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("socket directory %s has mode %#o: %w; others could replace the socket", dir, dst.Mode().Perm(), ErrUnsafeDir)
	}
	st, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if st.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s is not a socket; point --socket at the daemon's", path)
	}
	if owner, ok := fileOwner(st); ok && owner != uid {
		return fmt.Errorf("socket %s belongs to uid %d, not to you (uid %d): %w; not talking to it", path, owner, uid, ErrOtherUser)
	}
	return nil
}

// isNoDaemon reports whether a dial error means nobody listens on the socket.
func isNoDaemon(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}
