package natlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns add` bind-mounts named namespaces.
const netnsDir = "/var/run/netns"

// InNetns runs fn on an OS thread that has joined the named network
// namespace, then puts the thread back. Sockets fn creates belong to that
// namespace for their whole life, whichever thread later uses them. fn must
// not start goroutines that expect to be in the namespace.
//
// fn runs on a fresh goroutine: if the thread cannot return to its original
// namespace, that goroutine exits still locked and the Go runtime throws the
// tainted thread away instead of reusing it.
func InNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join(netnsDir, ns))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the thread dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("setns back from %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// setSysctls writes net sysctls (keys like "ipv4/ip_forward", relative to
// /proc/sys/net) inside namespace ns. Keys under ipv6/ are skipped when the
// kernel has no IPv6.
func setSysctls(ns string, kv ...string) error {
	return InNetns(ns, func() error {
		for i := 0; i+1 < len(kv); i += 2 {
			p := "/proc/sys/net/" + kv[i]
			if err := os.WriteFile(p, []byte(kv[i+1]), 0o644); err != nil {
				if strings.HasPrefix(kv[i], "ipv6/") && errors.Is(err, os.ErrNotExist) {
					continue
				}
				return fmt.Errorf("sysctl net.%s=%s in %s: %w", strings.ReplaceAll(kv[i], "/", "."), kv[i+1], ns, err)
			}
		}
		return nil
	})
}

// run runs a command with a bounded time and returns its combined output;
// the error carries the command line and output.
func run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// listNetns returns the names of the named network namespaces.
func listNetns() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}

// netnsPIDs returns the processes (other than this one) whose network
// namespace is the named one, like `ip netns pids`.
func netnsPIDs(ns string) ([]int, error) {
	var want unix.Stat_t
	if err := unix.Stat(filepath.Join(netnsDir, ns), &want); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/net", &st) != nil {
			continue
		}
		if st.Dev == want.Dev && st.Ino == want.Ino {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// deleteNetns kills the processes left in namespace ns (they were started
// in the lab's namespaces, by the lab's users) and removes it, like
// `ip netns del`: unmount the bind mount and remove the file. The kernel
// destroys the namespace, and the veths and bridges inside it, once the
// last process or socket holding it is gone.
func deleteNetns(ns string) error {
	p := filepath.Join(netnsDir, ns)
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	pids, _ := netnsPIDs(ns)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}
