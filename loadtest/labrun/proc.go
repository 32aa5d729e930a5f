package labrun

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopGrace is how long Stop waits after SIGTERM before SIGKILL.
const stopGrace = 3 * time.Second

// Proc is a process the lab started. Its stderr (and its stdout, unless the
// caller took it) goes to the log file at LogPath.
type Proc struct {
	// Name says what the process is, e.g. "rendezvous" or "t3-a peer up".
	Name string
	// LogPath is its log file.
	LogPath string
	// Started is when it was started.
	Started time.Time

	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error // set before done is closed
	once sync.Once
}

// startProc starts cmd (made with exec.CommandContext) with its output in
// a new log file at logPath.
// stdout, when not nil, returns the writer for the standard output, given
// the log file (to copy lines into it, or not).
func startProc(cmd *exec.Cmd, name, logPath string, stdout func(log io.Writer) io.Writer) (*Proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("labrun: log file: %w", err)
	}
	fmt.Fprintf(f, "# %s: %s\n", name, strings.Join(cmd.Args, " "))
	cmd.Stderr = f
	cmd.Stdout = f
	if stdout != nil {
		cmd.Stdout = stdout(f)
	}
	// Its own process group: a terminal's ^C reaches only this process,
	// which then stops the children itself (and can collect their logs).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A cancelled context asks politely first; exec kills it after
	// WaitDelay.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = 5 * time.Second
	}
	p := &Proc{Name: name, LogPath: logPath, cmd: cmd, log: f, done: make(chan struct{})}
	p.Started = time.Now()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("labrun: start %s: %w", name, err)
	}
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(f, "# %s ended after %s: %v\n", name, time.Since(p.Started).Round(time.Millisecond), exitText(err))
		f.Close()
		p.err = err
		close(p.done)
	}()
	return p, nil
}

func exitText(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not ended yet.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Err returns how the process ended (nil: exit status 0); call it after
// Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Wait waits for the process to end and returns Err.
func (p *Proc) Wait() error { return p.Err() }

// Pid returns the process ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Stop ends the process: SIGTERM, then SIGKILL after a grace period. It
// returns once the process is gone; calling it again is harmless.
func (p *Proc) Stop() {
	p.once.Do(func() {
		if !p.Running() {
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			return
		case <-time.After(stopGrace):
		}
		_ = p.cmd.Process.Kill()
	})
	<-p.done
}

// Kill ends the process at once with SIGKILL and waits for it.
func (p *Proc) Kill() {
	if p.Running() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// Tail returns the last n lines of the process's log file.
func (p *Proc) Tail(n int) string {
	return tailFile(p.LogPath, n)
}

// tailFile returns the last n lines of a file (or why it cannot).
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	b = bytes.TrimRight(b, "\n")
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		lines = append([][]byte{[]byte(fmt.Sprintf("... (%d lines before)", len(lines)-n))}, lines[len(lines)-n:]...)
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// lineWriter calls fn with every complete line written to it (without the
// newline); it also copies everything to w when w is not nil.
type lineWriter struct {
	mu  sync.Mutex
	w   io.Writer
	fn  func(line string)
	buf []byte
}

func (lw *lineWriter) Write(b []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.w != nil {
		if _, err := lw.w.Write(b); err != nil {
			return 0, err
		}
	}
	lw.buf = append(lw.buf, b...)
	for {
		i := bytes.IndexByte(lw.buf, '\n')
		if i < 0 {
			break
		}
		line := string(bytes.TrimRight(lw.buf[:i], "\r"))
		lw.buf = lw.buf[i+1:]
		lw.fn(line)
	}
	if len(lw.buf) > 1<<20 { // a runaway line: keep memory bounded
		lw.fn(string(lw.buf))
		lw.buf = lw.buf[:0]
	}
	return len(b), nil
}

// scanLines returns the lines of s.
func scanLines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// exitedError describes a process that ended too early, with its log tail.
func exitedError(p *Proc) error {
	return fmt.Errorf("%w: %s ended: %v; its log ends:\n%s", ErrExited, p.Name, exitText(p.Err()), indent(logTail(p, 20)))
}

func indent(s string) string {
	lines := scanLines(s)
	for i, l := range lines {
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n")
}
