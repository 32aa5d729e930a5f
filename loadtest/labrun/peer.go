package labrun

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/natlab"
)

// Key is a peer identity on disk.
type Key struct {
	Path string
	ID   string
}

// NewKey makes a new identity in the work directory.
func (l *Lab) NewKey(name string) (Key, error) {
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return Key{}, err
	}
	l.mu.Lock()
	l.seq++
	path := filepath.Join(l.Work, "keys", fmt.Sprintf("%s-%d.key", name, l.seq))
	l.mu.Unlock()
	if err := crypto.WriteKeyFile(path, id); err != nil {
		return Key{}, fmt.Errorf("labrun: key file: %w", err)
	}
	return Key{Path: path, ID: id.ID().String()}, nil
}

// PeerConfig configures a peer daemon.
type PeerConfig struct {
	// Name names it in logs; default "peer".
	Name string
	// Key is its identity; zero: a new one.
	Key Key
	// Allow, AllowAny and NoDirect are `peer up`'s --allow, --allow-any
	// and --no-direct; Listen its --listen (default ":0").
	Allow    []string
	AllowAny bool
	NoDirect bool
	Listen   string
	// RegisterTimeout is --register-timeout: the daemon gives up (exits)
	// when not registered within it; zero: the daemon's default (15 s).
	RegisterTimeout time.Duration
	// Args are extra `peer up` flags.
	Args []string
}

// Peer is a running peer daemon in a lab host.
type Peer struct {
	Name   string
	ID     string
	Key    Key
	Socket string
	Host   *natlab.Host
	Proc   *Proc

	lab *Lab
}

// StartPeer starts `peer up` in host h. The daemon runs until Stop, Close
// or the end of ctx. It does not wait for registration: see
// WaitRegistered.
func (l *Lab) StartPeer(ctx context.Context, h *natlab.Host, cfg PeerConfig) (*Peer, error) {
	if cfg.Name == "" {
		cfg.Name = "peer"
	}
	if cfg.Key.Path == "" {
		k, err := l.NewKey(cfg.Name)
		if err != nil {
			return nil, err
		}
		cfg.Key = k
	}
	l.mu.Lock()
	l.seq++
	sock := filepath.Join(l.Work, "s", strconv.Itoa(l.seq), "api.sock")
	l.mu.Unlock()
	args := []string{"up",
		"--server", l.Connect,
		"--key", cfg.Key.Path,
		"--socket", sock,
		"--log-level", l.cfg.PeerLogLevel,
	}
	for _, a := range cfg.Allow {
		args = append(args, "--allow", a)
	}
	if cfg.AllowAny {
		args = append(args, "--allow-any")
	}
	if cfg.NoDirect {
		args = append(args, "--no-direct")
	}
	if cfg.Listen != "" {
		args = append(args, "--listen", cfg.Listen)
	}
	if l.peerStream {
		args = append(args, "--stream-relay", l.StreamURL)
	}
	if cfg.RegisterTimeout > 0 {
		args = append(args, "--register-timeout", cfg.RegisterTimeout.String())
	}
	args = append(args, cfg.Args...)
	cmd := h.Command(ctx, l.cfg.Bins.Peer, args...)
	name := fmt.Sprintf("%s up (%s in %s)", cfg.Name, cfg.Key.ID[:8], h.Name)
	p, err := startProc(cmd, name, l.logPath(cfg.Name+"-up"), nil)
	if err != nil {
		return nil, err
	}
	if err := l.track(p); err != nil {
		return nil, err
	}
	return &Peer{Name: cfg.Name, ID: cfg.Key.ID, Key: cfg.Key, Socket: sock, Host: h, Proc: p, lab: l}, nil
}

// Stop stops the daemon.
func (p *Peer) Stop() { p.Proc.Stop() }

// cli runs a peer CLI command against this daemon and returns its standard
// output; the error carries its standard error. The command runs in this
// process's namespace: it only talks to the daemon's Unix socket.
func (p *Peer) cli(ctx context.Context, args ...string) ([]byte, error) {
	args = append(args, "--socket", p.Socket)
	cmd := exec.CommandContext(ctx, p.lab.cfg.Bins.Peer, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("peer %s: %w: %s", args[0], err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// Status runs `peer status --json`.
func (p *Peer) Status(ctx context.Context) (daemon.DaemonStatus, error) {
	var st daemon.DaemonStatus
	out, err := p.cli(ctx, "status", "--json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("peer status --json: %w: %q", err, out)
	}
	return st, nil
}

// PeerStatus returns what `peer status` says about the peer with ID id
// (ok false when it lists no such peer).
func (p *Peer) PeerStatus(ctx context.Context, id string) (daemon.PeerStatus, bool, error) {
	st, err := p.Status(ctx)
	if err != nil {
		return daemon.PeerStatus{}, false, err
	}
	for _, ps := range st.Peers {
		if ps.ID == id {
			return ps, true, nil
		}
	}
	return daemon.PeerStatus{}, false, nil
}

// WaitRegistered polls `peer status --json` until the daemon says it is
// registered, the daemon exits, or timeout passes.
func (p *Peer) WaitRegistered(ctx context.Context, timeout time.Duration) (daemon.DaemonStatus, error) {
	deadline := time.Now().Add(timeout)
	var last daemon.DaemonStatus
	var lastErr error
	for {
		if !p.Proc.Running() {
			return last, exitedError(p.Proc)
		}
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := p.Status(sctx)
		cancel()
		if err == nil && st.Registered {
			return st, nil
		}
		last, lastErr = st, err
		if ctx.Err() != nil {
			return last, ctx.Err()
		}
		if time.Now().After(deadline) {
			why := st.Error
			if lastErr != nil {
				why = lastErr.Error()
			}
			return last, fmt.Errorf("%w: %s within %s (%s); its log ends:\n%s", ErrNotRegistered, p.Proc.Name, timeout, why, indent(logTail(p.Proc, 3)))
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// PingOptions are `peer ping` flags.
type PingOptions struct {
	// Count is --count; 0 pings until stopped.
	Count int
	// Interval is --interval (default 100 ms); Timeout --timeout, the
	// wait for each reply (default 10 s).
	Interval, Timeout time.Duration
	// UntilDirect is --until-direct.
	UntilDirect bool
}

// PingReply is one line of `peer ping --json`, with the time since the
// command started.
type PingReply struct {
	Seq     int     `json:"seq"`
	Peer    string  `json:"peer"`
	Overlay string  `json:"overlay,omitempty"`
	Path    string  `json:"path,omitempty"`
	Remote  string  `json:"remote,omitempty"`
	RTTms   float64 `json:"rtt_ms,omitempty"`
	Error   string  `json:"error,omitempty"`
	// At is when the line arrived, since the command started.
	At time.Duration `json:"-"`
}

// OK reports whether the line is a reply (not a failed ping).
func (r PingReply) OK() bool { return r.Error == "" && r.Path != "" }

// ParsePingLine parses one line of `peer ping --json`.
func ParsePingLine(line []byte) (PingReply, error) {
	var r PingReply
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("ping line %q: %w", line, err)
	}
	if r.Seq <= 0 {
		return r, fmt.Errorf("ping line %q: no seq", line)
	}
	if r.Error == "" && r.Path == "" {
		return r, fmt.Errorf("ping line %q: neither path nor error", line)
	}
	return r, nil
}

// Ping runs `peer ping target --json` and calls each (if not nil) with
// every line as it arrives; when each returns false the command is stopped
// and Ping returns the replies so far with a nil error. Otherwise Ping
// returns when the command ends (its exit error included) or ctx ends
// (the replies so far, and ctx's error).
func (p *Peer) Ping(ctx context.Context, target string, o PingOptions, each func(PingReply) bool) ([]PingReply, error) {
	replies, _, err := p.ping(ctx, target, o, each)
	return replies, err
}

// ping is Ping, also returning the process (nil if it did not start).
func (p *Peer) ping(ctx context.Context, target string, o PingOptions, each func(PingReply) bool) ([]PingReply, *Proc, error) {
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	args := []string{"ping", target, "--json", "--socket", p.Socket,
		"--count", strconv.Itoa(o.Count),
		"--interval", o.Interval.String(),
		"--timeout", o.Timeout.String(),
	}
	if o.UntilDirect {
		args = append(args, "--until-direct")
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(pctx, p.lab.cfg.Bins.Peer, args...)
	stopped := make(chan struct{})
	var replies []PingReply
	start := time.Now()
	stop := func() {
		select {
		case <-stopped:
		default:
			close(stopped)
			cancel()
		}
	}
	proc, err := startProc(cmd, p.Name+" ping", p.lab.logPath(p.Name+"-ping"), func(log io.Writer) io.Writer {
		return &lineWriter{w: log, fn: func(line string) {
			r, err := ParsePingLine([]byte(line))
			if err != nil {
				return
			}
			r.At = time.Since(start)
			replies = append(replies, r)
			if each != nil && !each(r) {
				stop()
			}
		}}
	})
	if err != nil {
		return nil, nil, err
	}
	if err := p.lab.track(proc); err != nil {
		return nil, proc, err
	}
	err = proc.Wait()
	// Wait returns after the last line was handled: replies is ours now.
	select {
	case <-stopped:
		return replies, proc, nil
	default:
	}
	if ctx.Err() != nil {
		return replies, proc, ctx.Err()
	}
	if err != nil {
		return replies, proc, fmt.Errorf("peer ping: %w\n%s", err, indent(proc.Tail(10)))
	}
	return replies, proc, nil
}

// Listen runs `peer listen` (one stream, port 0, stdin empty) with its
// output going to out; the returned process ends when the stream has.
func (p *Peer) Listen(ctx context.Context, out io.Writer, args ...string) (*Proc, error) {
	args = append([]string{"listen", "--socket", p.Socket}, args...)
	cmd := exec.CommandContext(ctx, p.lab.cfg.Bins.Peer, args...)
	proc, err := startProc(cmd, p.Name+" listen", p.lab.logPath(p.Name+"-listen"), func(io.Writer) io.Writer { return out })
	if err != nil {
		return nil, err
	}
	return proc, p.lab.track(proc)
}

// Pipe runs `peer pipe target` with in as its standard input and out as
// its output (nil: discarded).
func (p *Peer) Pipe(ctx context.Context, target string, in io.Reader, out io.Writer, args ...string) (*Proc, error) {
	args = append([]string{"pipe", target, "--socket", p.Socket}, args...)
	cmd := exec.CommandContext(ctx, p.lab.cfg.Bins.Peer, args...)
	cmd.Stdin = in
	if out == nil {
		out = io.Discard
	}
	proc, err := startProc(cmd, p.Name+" pipe", p.lab.logPath(p.Name+"-pipe"), func(io.Writer) io.Writer { return out })
	if err != nil {
		return nil, err
	}
	return proc, p.lab.track(proc)
}

// logTail returns the last n lines a process logged (not the lab's own
// header lines), or says it logged nothing.
func logTail(p *Proc, n int) string {
	var lines []string
	for _, l := range scanLines(p.Tail(n + 2)) {
		if !strings.HasPrefix(l, "# ") && !strings.HasPrefix(l, "... (") {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 0 {
		return "(nothing logged)"
	}
	return strings.Join(lines, "\n")
}
