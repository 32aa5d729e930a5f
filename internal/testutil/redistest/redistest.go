// Package redistest runs real Redis servers for tests: Debian's redis-server
// on a free loopback port with a temporary directory and no persistence,
// installed with apt-get when missing, killed when the test ends. Start gives
// one server (which can be stopped and restarted on the same port, to test
// outages); StartCluster gives a small Redis Cluster.
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/debpkg"
)

// startTimeout bounds how long a server may take to answer PING.
const startTimeout = 10 * time.Second

// Server is one redis-server process owned by a test.
type Server struct {
	tb    testing.TB
	bin   string
	dir   string
	port  int
	extra []string

	mu     sync.Mutex
	proc   *os.Process
	exited chan struct{} // closed when proc has been waited for
}

// Start runs a redis-server on a free 127.0.0.1 port and waits until it
// answers PING. It is stopped in tb.Cleanup. Without the program it installs
// Debian's redis-server (as root) or skips the test (fails under CI).
func Start(tb testing.TB) *Server {
	tb.Helper()
	return start(tb, nil)
}

func start(tb testing.TB, extra []string) *Server {
	tb.Helper()
	bin := debpkg.Require(tb, "redis-server", "redis-server")
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir(), extra: extra}
	tb.Cleanup(s.Stop)
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if s.port, err = freePort(); err != nil {
			break
		}
		if err = s.launch(); err == nil {
			return s
		}
	}
	tb.Fatalf("redistest: %v", err)
	return nil
}

// Addr returns the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the server's port.
func (s *Server) Port() int { return s.port }

// Dir returns the server's working directory.
func (s *Server) Dir() string { return s.dir }

// Stop kills the server (its data is gone: nothing is persisted). Calling it
// again does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	_ = s.proc.Kill()
	<-s.exited
	s.proc, s.exited = nil, nil
}

// Restart starts the server again on the same port (stopping it first if it
// runs) and waits until it answers. Its data starts empty.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	deadline := time.Now().Add(startTimeout)
	for {
		err := s.launch()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("redistest: restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Server) launch() error {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--logfile", "",
		"--loglevel", "warning",
	}
	args = append(args, s.extra...)
	cmd := exec.Command(s.bin, args...)
	log := &bytes.Buffer{}
	cmd.Stdout = &capped{b: log}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	if err := waitPing(s.Addr(), exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("redis-server on port %d: %w; log: %s", s.port, err, log.String())
	}
	s.mu.Lock()
	s.proc, s.exited = cmd.Process, exited
	s.mu.Unlock()
	return nil
}

// waitPing dials addr until it answers +PONG, the process exits, or
// startTimeout passes.
func waitPing(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(startTimeout)
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("exited during start")
		default:
		}
		if err = ping(addr); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no PONG within %v: %v", startTimeout, err)
}

// ping sends one PING in the inline protocol and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	return Ping(c)
}

// Ping sends one PING in Redis's inline protocol over c and expects +PONG,
// within a second.
func Ping(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// capped keeps the first 8 KiB written to it (a server's log, for errors).
type capped struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := 8<<10 - c.b.Len(); room > 0 {
		c.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
