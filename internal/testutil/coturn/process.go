// Package coturn runs coturn's programs (turnserver, turnutils_peer and
// turnutils_uclient, from Debian's coturn package) as a reference for our
// TURN server: interop tests drive our server with coturn's client, and the
// relay benchmark runs the same load against coturn's server. It also parses
// turnutils_uclient's report.
package coturn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Program names from Debian's coturn package.
const (
	ServerProgram = "turnserver"
	PeerProgram   = "turnutils_peer"
	ClientProgram = "turnutils_uclient"
	// Package is the Debian package holding all three.
	Package = "coturn"
)

// outputTail is how much of a process's output is kept.
const outputTail = 256 << 10

// Process is a running coturn program. Its combined output is kept (the
// last outputTail bytes) and, line by line, passed to an optional callback.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}

	mu      sync.Mutex
	out     []byte
	waitErr error
}

// start runs path with args, streaming lines to onLine (may be nil).
func start(ctx context.Context, path string, args []string, onLine func(time.Time, string)) (*Process, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 3 * time.Second
	// Own process group, so that Stop reaches children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if onLine != nil {
				onLine(time.Now(), line)
			}
			p.mu.Lock()
			p.out = append(p.out, line...)
			p.out = append(p.out, '\n')
			if len(p.out) > 2*outputTail {
				p.out = append(p.out[:0], p.out[len(p.out)-outputTail:]...)
			}
			p.mu.Unlock()
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		err := cmd.Wait()
		pw.Close()
		<-readDone
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited and its output is read.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err returns the exit error once Done is closed (nil for exit status 0).
func (p *Process) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// Output returns the output kept so far.
func (p *Process) Output() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]byte(nil), p.out...)
}

// Wait waits for the process to exit or ctx to end.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop ends the process: SIGTERM to its process group, then SIGKILL after
// two seconds. It returns once the process has exited.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	pgid := p.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// ErrProcStat: /proc/<pid>/stat could not be parsed.
var ErrProcStat = errors.New("coturn: unexpected /proc/<pid>/stat")

// ProcessCPU returns the CPU time (user + system) that process pid has used,
// from /proc/<pid>/stat, in 10 ms steps.
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/<pid>/stat line. The command name (field 2) is in parentheses and
// may hold spaces, so fields are counted from the last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, ErrProcStat
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, ErrProcStat
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil || ut < 0 || st < 0 {
		return 0, ErrProcStat
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// CPU returns the CPU time the process has used so far.
func (p *Process) CPU() (time.Duration, error) { return ProcessCPU(p.Pid()) }
