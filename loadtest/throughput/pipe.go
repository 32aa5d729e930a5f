package throughput

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/bintest"
	"github.com/keymesh/keymesh/loadtest/cli"
)

// `loadtest throughput --pipe` moves bytes with the `peer pipe` a user
// runs, between real rendezvous, relay and peer daemon processes on
// loopback: one pair of daemons on a direct path and one pair with
// --no-direct, which relays every packet, against the same servers in the
// same run. Runs alternate between the two paths so that a busy moment of
// the machine falls on both.

// pipePath is one pair of peer daemons: a pipes to b.
type pipePath struct {
	name         string // "direct" or "relay"
	aSock, bSock string
	bID          string
	a, b         *exec.Cmd
}

// pipeRun is one transfer's outcome.
type pipeRun struct {
	Path    string  `json:"path"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	MBps    float64 `json:"mb_per_s"`
	// CPU seconds spent by the two daemons, the relay and the two CLI
	// processes (pipe and listen) during the transfer.
	DaemonCPU float64 `json:"daemon_cpu_s"`
	RelayCPU  float64 `json:"relay_cpu_s"`
	CLICPU    float64 `json:"cli_cpu_s"`
	// Datagrams the kernel dropped at the daemons' and the relay's UDP
	// sockets during the transfer (full receive buffers): loss that
	// QUIC's congestion control reads as congestion.
	DaemonDrops int64 `json:"daemon_socket_drops"`
	RelayDrops  int64 `json:"relay_socket_drops"`
}

// pipeReport is what --record keeps.
type pipeReport struct {
	Bytes  int64     `json:"bytes_per_run"`
	Runs   []pipeRun `json:"runs"`
	Direct pipeRun   `json:"direct_median"`
	Relay  pipeRun   `json:"relay_median"`
	Ratio  float64   `json:"relay_over_direct"`
	Ratios []float64 `json:"relay_over_direct_per_round"`
}

// pipeEnv is the servers and daemons of one --pipe run.
type pipeEnv struct {
	bins  bintest.Binaries
	dir   string
	relay *exec.Cmd
	procs []pipeProc
	paths []*pipePath
}

// pipeProc is a started server or daemon; done closes once it was
// waited for.
type pipeProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (e *pipeEnv) close() {
	for _, p := range slices.Backward(e.procs) {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range slices.Backward(e.procs) {
		select {
		case <-p.done:
		case <-time.After(3 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// start runs a server or daemon with its output in a log file under the
// run's directory; watch, when not nil, sees each output line.
func (e *pipeEnv) start(name string, watch func(line string), args ...string) (*exec.Cmd, error) {
	f, err := os.Create(filepath.Join(e.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = e.dir // a server's default files (its key) stay in the run's directory
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	go func() {
		defer f.Close()
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			fmt.Fprintln(f, sc.Text())
			if watch != nil {
				watch(sc.Text())
			}
		}
		_, _ = io.Copy(f, pr)
	}()
	if err := cmd.Start(); err != nil {
		pw.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	done := make(chan struct{})
	e.procs = append(e.procs, pipeProc{cmd, done})
	go func() {
		_ = cmd.Wait()
		pw.Close()
		close(done)
	}()
	return cmd, nil
}

// startAndFind starts a process and waits for the first output line that
// re matches, returning its first submatch.
func (e *pipeEnv) startAndFind(ctx context.Context, name string, re *regexp.Regexp, args ...string) (*exec.Cmd, string, error) {
	found := make(chan string, 1)
	var once sync.Once
	cmd, err := e.start(name, func(line string) {
		if m := re.FindStringSubmatch(line); m != nil {
			once.Do(func() { found <- m[1] })
		}
	}, args...)
	if err != nil {
		return nil, "", err
	}
	select {
	case v := <-found:
		return cmd, v, nil
	case <-time.After(15 * time.Second):
	case <-ctx.Done():
	}
	return nil, "", fmt.Errorf("%s printed no line matching %s (log: %s)", name, re, filepath.Join(e.dir, name+".log"))
}

var (
	pipeRelayReady = regexp.MustCompile(`relay ready.* udp=(\S+)`)
	pipeConnect    = regexp.MustCompile(`connect string: (\S+)`)
)

// startPipeEnv starts the rendezvous and relay with their defaults (but
// for a random in-memory ticket key and no admin listener) and a pair of
// daemons per path.
func startPipeEnv(ctx context.Context, bins bintest.Binaries) (e *pipeEnv, err error) {
	dir, err := os.MkdirTemp("", "keymesh-pipe-")
	if err != nil {
		return nil, err
	}
	e = &pipeEnv{bins: bins, dir: dir}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	var relayAddr, server string
	e.relay, relayAddr, err = e.startAndFind(ctx, "relay", pipeRelayReady,
		bins.Relay, "--dev", "--listen", "127.0.0.1:0", "--admin", "")
	if err != nil {
		return e, err
	}
	_, server, err = e.startAndFind(ctx, "rendezvous", pipeConnect,
		bins.Rendezvous, "--listen", "127.0.0.1:0", "--admin", "", "--relay", relayAddr)
	if err != nil {
		return e, err
	}
	for _, name := range []string{"direct", "relay"} {
		p := &pipePath{name: name}
		var ids [2]string
		for k, side := range []string{"a", "b"} {
			key := filepath.Join(dir, name+"-"+side+".key")
			if out, err := exec.CommandContext(ctx, bins.Peer, "keygen", "--key", key).CombinedOutput(); err != nil {
				return e, fmt.Errorf("peer keygen: %w: %s", err, out)
			}
			out, err := exec.CommandContext(ctx, bins.Peer, "id", "--key", key).Output()
			if err != nil {
				return e, fmt.Errorf("peer id: %w", err)
			}
			ids[k] = strings.Fields(string(out))[0]
			sock := filepath.Join(dir, name+"-"+side+".sock")
			args := []string{bins.Peer, "up", "--key", key, "--socket", sock, "--server", server, "--listen", "127.0.0.1:0"}
			if side == "b" {
				args = append(args, "--allow-any")
			}
			if name == "relay" {
				args = append(args, "--no-direct")
			}
			cmd, err := e.start(name+"-"+side, nil, args...)
			if err != nil {
				return e, err
			}
			if side == "a" {
				p.a, p.aSock = cmd, sock
			} else {
				p.b, p.bSock = cmd, sock
			}
		}
		p.bID = ids[1]
		e.paths = append(e.paths, p)
	}
	for _, p := range e.paths {
		if err := e.waitPath(ctx, p); err != nil {
			return e, err
		}
	}
	return e, nil
}

// waitPath pings until a reaches b over the path's kind.
func (e *pipeEnv) waitPath(ctx context.Context, p *pipePath) error {
	deadline := time.Now().Add(20 * time.Second)
	last := ""
	for time.Now().Before(deadline) && ctx.Err() == nil {
		out, _ := exec.CommandContext(ctx, e.bins.Peer, "ping", "--socket", p.aSock, "--count", "1", p.bID).CombinedOutput()
		last = strings.TrimSpace(string(out))
		if strings.Contains(last, " via "+p.name+" ") {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s pair: no ping over the %s path within 20 s (last: %q; logs in %s)", p.name, p.name, last, e.dir)
}

// procCPU is a running process's user plus system CPU time.
func procCPU(c *exec.Cmd) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which ends with the last ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// exitCPU is an ended process's user plus system CPU time.
func exitCPU(c *exec.Cmd) time.Duration {
	if c.ProcessState == nil {
		return 0
	}
	return c.ProcessState.UserTime() + c.ProcessState.SystemTime()
}

// transfer pipes n bytes from a to b over p and times it from the start
// of `peer pipe` to the last byte out of `peer listen`.
func (e *pipeEnv) transfer(ctx context.Context, p *pipePath, n int64) (pipeRun, error) {
	listen := exec.CommandContext(ctx, e.bins.Peer, "listen", "--socket", p.bSock)
	out, err := listen.StdoutPipe()
	if err != nil {
		return pipeRun{}, err
	}
	var lerr strings.Builder
	listen.Stderr = &lerr
	if err := listen.Start(); err != nil {
		return pipeRun{}, err
	}
	defer func() { _ = listen.Process.Kill(); _ = listen.Wait() }()
	// `peer listen` prints nothing when it is ready: give it a moment to
	// reach its daemon before the stream arrives.
	time.Sleep(300 * time.Millisecond)

	type rx struct {
		n   int64
		end time.Time
	}
	got := make(chan rx, 1)
	go func() {
		k, _ := io.Copy(io.Discard, out)
		got <- rx{k, time.Now()}
	}()
	d0, r0 := procCPU(p.a)+procCPU(p.b), procCPU(e.relay)
	dd0, rd0 := udpDrops(p.a.Process.Pid)+udpDrops(p.b.Process.Pid), udpDrops(e.relay.Process.Pid)
	pipe := exec.CommandContext(ctx, e.bins.Peer, "pipe", "--socket", p.aSock, p.bID)
	pipe.Stdin = io.LimitReader(pipeSource{}, n)
	var perr strings.Builder
	pipe.Stderr = &perr
	start := time.Now()
	if err := pipe.Run(); err != nil {
		return pipeRun{}, fmt.Errorf("peer pipe over the %s path: %w: %s", p.name, err, strings.TrimSpace(perr.String()))
	}
	var r rx
	select {
	case r = <-got:
	case <-time.After(30 * time.Second):
		return pipeRun{}, fmt.Errorf("peer listen on the %s path never ended (%s)", p.name, strings.TrimSpace(lerr.String()))
	case <-ctx.Done():
		return pipeRun{}, ctx.Err()
	}
	_ = listen.Wait()
	if r.n != n {
		return pipeRun{}, fmt.Errorf("%s path: peer listen wrote %d bytes of %d (%s)", p.name, r.n, n, strings.TrimSpace(lerr.String()))
	}
	el := r.end.Sub(start)
	return pipeRun{
		Path: p.name, Bytes: r.n, Seconds: el.Seconds(), MBps: float64(r.n) / el.Seconds() / 1e6,
		DaemonCPU:   (procCPU(p.a) + procCPU(p.b) - d0).Seconds(),
		RelayCPU:    (procCPU(e.relay) - r0).Seconds(),
		CLICPU:      (exitCPU(pipe) + exitCPU(listen)).Seconds(),
		DaemonDrops: udpDrops(p.a.Process.Pid) + udpDrops(p.b.Process.Pid) - dd0,
		RelayDrops:  udpDrops(e.relay.Process.Pid) - rd0,
	}, nil
}

// pipeSource is an endless stream of incompressible bytes (QUIC encrypts
// anyway; this keeps the source's own cost small).
type pipeSource struct{}

var pipeBlock = func() []byte {
	b := make([]byte, 64<<10)
	rand.Read(b)
	return b
}()

func (pipeSource) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		n += copy(p[n:], pipeBlock)
	}
	return n, nil
}

// throughputPipe runs --pipe: o.runs rounds, each a direct and a relayed
// transfer, and prints the medians and the relayed/direct ratio.
func throughputPipe(ctx context.Context, o tpOpts, out, progress io.Writer) (pipeReport, string, error) {
	rep := pipeReport{Bytes: o.bytes}
	bins, cleanup, err := cli.LabBinaries(ctx, o.bin)
	if err != nil {
		return rep, "", err
	}
	defer cleanup()
	e, err := startPipeEnv(ctx, bins)
	if err != nil {
		return rep, "", err
	}
	defer os.RemoveAll(e.dir)
	defer e.close()
	byPath := map[string][]pipeRun{}
	for i := range o.runs {
		round := map[string]float64{}
		for _, p := range e.paths {
			rctx, cancel := context.WithTimeout(ctx, o.timeout)
			r, err := e.transfer(rctx, p, o.bytes)
			cancel()
			if err != nil {
				return rep, "", err
			}
			fmt.Fprintf(progress, "round %d, %s: %.1f MB/s (%d bytes in %.2f s)\n", i+1, p.name, r.MBps, r.Bytes, r.Seconds)
			rep.Runs = append(rep.Runs, r)
			byPath[p.name] = append(byPath[p.name], r)
			round[p.name] = r.MBps
		}
		rep.Ratios = append(rep.Ratios, round["relay"]/round["direct"])
	}
	rep.Direct, rep.Relay = pipeMedian(byPath["direct"]), pipeMedian(byPath["relay"])
	rep.Ratio = rep.Relay.MBps / rep.Direct.MBps
	md := pipeTable(rep)
	fmt.Fprintf(out, "\n`peer pipe` on loopback, direct against relayed, %s per run, median of %d round(s):\n\n%s", tpSize(o.bytes), o.runs, md)
	return rep, md, nil
}

func pipeMedian(rs []pipeRun) pipeRun {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b pipeRun) int {
		switch {
		case a.MBps < b.MBps:
			return -1
		case a.MBps > b.MBps:
			return 1
		}
		return 0
	})
	return rs[len(rs)/2]
}

// pipeTable is the Markdown table of a report.
func pipeTable(rep pipeReport) string {
	var b strings.Builder
	fmt.Fprintln(&b, "| path | MB/s | time | CPU s/GiB: daemons / relay / pipe+listen | socket drops: daemons / relay | relayed / direct |")
	fmt.Fprintln(&b, "| --- | ---: | ---: | --- | --- | ---: |")
	perGiB := func(s float64, n int64) string { return fmt.Sprintf("%.1f", s/(float64(n)/(1<<30))) }
	for _, r := range []pipeRun{rep.Direct, rep.Relay} {
		ratio := "1.00"
		relayCPU, relayDrops := "-", "-"
		if r.Path == "relay" {
			ratio = fmt.Sprintf("%.2f", rep.Ratio)
			relayCPU = perGiB(r.RelayCPU, r.Bytes)
			relayDrops = strconv.FormatInt(r.RelayDrops, 10)
		}
		fmt.Fprintf(&b, "| %s | %.1f | %.2f s | %s / %s / %s | %d / %s | %s |\n", r.Path, r.MBps, r.Seconds,
			perGiB(r.DaemonCPU, r.Bytes), relayCPU, perGiB(r.CLICPU, r.Bytes), r.DaemonDrops, relayDrops, ratio)
	}
	if len(rep.Ratios) > 1 {
		rs := make([]string, len(rep.Ratios))
		for i, x := range rep.Ratios {
			rs[i] = fmt.Sprintf("%.2f", x)
		}
		fmt.Fprintf(&b, "\nRelayed / direct in each round: %s.\n", strings.Join(rs, ", "))
	}
	return b.String()
}

var errPipeFlags = errors.New("--pipe takes --bytes, --runs, --timeout, --bin and --record, not --only")

// udpDrops sums the kernel's drop counts (a full receive buffer, mostly)
// of the UDP sockets that the process pid holds, from /proc/net/udp and
// udp6; -1 when they cannot be read.
func udpDrops(pid int) int64 {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var total int64
	for _, table := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			return -1
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 13 || !inodes[f[9]] {
				continue
			}
			d, _ := strconv.ParseInt(f[12], 10, 64)
			total += d
		}
	}
	return total
}
