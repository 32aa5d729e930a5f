package relaybench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a server process.
type child struct {
	cmd  *exec.Cmd
	out  *capBuf
	done chan struct{}
}

// capBuf keeps the first 64 KiB a child writes.
type capBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (c *capBuf) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := 64<<10 - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capBuf) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

// startChild starts a server; it dies with this process (Pdeathsig).
func startChild(ctx context.Context, path string, args ...string) (*child, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	out := &capBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	c := &child{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop ends the child: SIGTERM, then SIGKILL after 3 s.
func (c *child) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(3 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// exited returns an error with the child's last output if it has ended.
func (c *child) exited() error {
	select {
	case <-c.done:
		return fmt.Errorf("%s exited: %v; output: %s", c.cmd.Path, c.cmd.ProcessState, tail(c.out.String(), 1500))
	default:
		return nil
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return strings.TrimSpace(s)
}

// freePort returns a port free for both UDP and TCP on 127.0.0.1.
func freePort() (uint16, error) {
	for range 20 {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return 0, err
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		t, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		u.Close()
		if err == nil {
			t.Close()
			return uint16(port), nil
		}
	}
	return 0, fmt.Errorf("no port free for both UDP and TCP")
}

// waitTCP waits until addr accepts a TCP connection.
func waitTCP(ctx context.Context, c *child, addr netip.AddrPort) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr.String(), time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if err := c.exited(); err != nil {
			return err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not listening on %s: %v; output: %s", c.cmd.Path, addr, err, tail(c.out.String(), 1500))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tempDir makes a directory removed by the returned function.
func tempDir() (string, func(), error) {
	d, err := os.MkdirTemp("", "relaybench-")
	if err != nil {
		return "", func() {}, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}

// parallel runs f(ctx, i) for i in [0, n) on at most limit goroutines and
// returns the first error; after one, the others see ctx cancelled.
func parallel(ctx context.Context, n, limit int, f func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, limit)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if ctx.Err() != nil {
				return
			}
			if err := f(ctx, i); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		}()
	}
	wg.Wait()
	return first
}
