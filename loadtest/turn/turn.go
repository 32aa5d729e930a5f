// Package turn is `loadtest turn`: coturn's own TURN client
// (turnutils_uclient) against our TURN relay and coturn, side by side, with
// each server's CPU time per packet.
package turn

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/coturn"
	"github.com/keymesh/keymesh/internal/testutil/debpkg"
	"github.com/keymesh/keymesh/loadtest/cli"
)

// relayOpts configures `loadtest turn`.
type relayOpts struct {
	allocations []int         // rows: concurrent allocations (uclient sessions)
	size        int           // message bytes
	interval    time.Duration // per-allocation send interval
	maxRate     int           // cap on offered messages/s over all allocations (0: none)
	duration    time.Duration // sending time per allocation
	messages    int           // messages per allocation (overrides duration)
	perProcess  int           // uclient sessions per uclient process
	peers       int           // turnutils_peer echo processes
	sockets     int           // our SO_REUSEPORT UDP sockets
	threads     int           // coturn relay-threads (0: its default)
	tcp         bool          // clients reach the server over TCP
	servers     []string      // "ours", "coturn"
	window      time.Duration // length of the steady-rate window
	repeat      int           // runs per row and server, medians reported
	cpuProfile  string        // CPU profile file for this process
	relayLog    bool          // our relay's debug log to stderr
	clientLogs  string        // directory for every uclient's output
	short       bool
}

func parseRelayFlags(args []string, stderr io.Writer) (relayOpts, error) {
	fs := flag.NewFlagSet("loadtest turn", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o       relayOpts
		allocs  = fs.String("allocations", "1,100,1000", "comma-separated allocation counts, one table row pair each (up to 10000)")
		servers = fs.String("servers", "ours,coturn", "servers to measure: ours, coturn or both")
	)
	fs.IntVar(&o.size, "size", 1000, "message size in bytes (turnutils_uclient -l)")
	fs.DurationVar(&o.interval, "interval", 20*time.Millisecond, "per-allocation send interval, whole milliseconds (uclient -z; 20ms is one audio stream)")
	fs.IntVar(&o.maxRate, "max-rate", 0, "cap on offered messages per second over all allocations; a row above it gets a longer interval (0: no cap)")
	fs.DurationVar(&o.duration, "duration", 15*time.Second, "sending time per allocation (sets messages = duration / interval)")
	fs.IntVar(&o.messages, "messages", 0, "messages per allocation (uclient -n); overrides --duration")
	fs.IntVar(&o.perProcess, "per-process", 200, "uclient sessions per turnutils_uclient process (it connects them one by one, 0.1 s each; more processes cost more CPU: each ticks every 1 ms)")
	fs.IntVar(&o.peers, "peers", 2, "turnutils_peer echo processes (uclient processes take turns); one is a bottleneck past ~20k messages/s")
	fs.IntVar(&o.sockets, "sockets", max(8, 2*runtime.GOMAXPROCS(0)), "our relay's SO_REUSEPORT UDP sockets (pion gives each its own reader and allocation table)")
	fs.IntVar(&o.threads, "coturn-threads", 0, "coturn relay-threads (0: coturn's default, one per CPU)")
	fs.IntVar(&o.repeat, "repeat", 1, "runs of each row against each server, alternating servers; the table shows medians (a busy machine makes single runs noisy)")
	fs.BoolVar(&o.tcp, "tcp", false, "clients reach the TURN server over TCP instead of UDP")
	fs.DurationVar(&o.window, "window", 0, "length of the window the steady rate and CPU are measured over (0: half of --duration)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process to `file` (use with --servers ours: it profiles our relay)")
	fs.BoolVar(&o.relayLog, "relay-log", false, "write our relay's debug log to stderr (failed requests and why)")
	fs.StringVar(&o.clientLogs, "client-logs", "", "write each turnutils_uclient's output into `dir` (for diagnosis)")
	fs.BoolVar(&o.short, "short", false, "CI mode: 2 allocations, 1 s of traffic, about 10 s in all")
	if err := cli.ParseOnlyFlags(fs, "turn",
		"Runs coturn's turnutils_uclient against our TURN relay (in this process) and against\n"+
			"coturn's turnserver, with the same load, and prints a Markdown table.", args); err != nil {
		return o, err
	}
	for _, s := range strings.Split(*servers, ",") {
		switch s = strings.TrimSpace(s); s {
		case "ours", "coturn":
			o.servers = append(o.servers, s)
		case "both":
			o.servers = append(o.servers, "ours", "coturn")
		default:
			return o, fmt.Errorf("--servers: unknown server %q: use ours, coturn or both", s)
		}
	}
	if o.short {
		*allocs = "2"
		o.duration, o.messages, o.window = time.Second, 0, time.Second
	}
	if o.window == 0 {
		o.window = max(time.Second, o.duration/2)
	}
	for _, s := range strings.Split(*allocs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 20000 {
			return o, fmt.Errorf("--allocations: %q is not a count from 1 to 20000", s)
		}
		o.allocations = append(o.allocations, n)
	}
	switch {
	case o.size < 1 || o.size > 1400:
		return o, fmt.Errorf("--size %d: use 1 to 1400 bytes (one unfragmented datagram)", o.size)
	case o.interval < time.Millisecond:
		return o, fmt.Errorf("--interval %s: use at least 1ms", o.interval)
	case o.messages < 0 || o.maxRate < 0:
		return o, errors.New("--messages and --max-rate must not be negative")
	case o.messages == 0 && o.duration < o.interval:
		return o, fmt.Errorf("--duration %s is shorter than --interval %s", o.duration, o.interval)
	case o.perProcess < 1 || o.perProcess > 1000:
		return o, fmt.Errorf("--per-process %d: use 1 to 1000", o.perProcess)
	case o.repeat < 1 || o.repeat > 20:
		return o, fmt.Errorf("--repeat %d: use 1 to 20", o.repeat)
	case o.peers < 1 || o.peers > 64:
		return o, fmt.Errorf("--peers %d: use 1 to 64", o.peers)
	case o.sockets < 1 || o.sockets > 64:
		return o, fmt.Errorf("--sockets %d: use 1 to 64", o.sockets)
	case o.window != 0 && o.window < 500*time.Millisecond:
		return o, fmt.Errorf("--window %s: use at least 500ms", o.window)
	}
	return o, nil
}

// Main is `loadtest turn`: the same TURN load from coturn's
// turnutils_uclient against our relay and against coturn's turnserver.
func Main(ctx context.Context, args []string) error {
	o, err := parseRelayFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	_, err = relayBench(ctx, o, os.Stdout, os.Stderr)
	return err
}

// relayBench runs every row, prints the table to out and progress to log,
// and returns the rows.
func relayBench(ctx context.Context, o relayOpts, out, log io.Writer) ([]relayResult, error) {
	for _, prog := range []string{coturn.ClientProgram, coturn.PeerProgram, coturn.ServerProgram} {
		if _, err := debpkg.Ensure(ctx, prog, coturn.Package); err != nil {
			return nil, err
		}
	}
	limit := cli.RaiseFileLimit()
	for _, n := range o.allocations {
		// Our relay holds a socket per allocation, and uclient leaves a
		// probe allocation behind each session: two per session.
		if need := 2*n + 200; limit > 0 && uint64(need) > limit {
			return nil, fmt.Errorf("--allocations %d needs about %d file descriptors (uclient leaves an idle probe allocation per session), the limit is %d: raise it with `ulimit -Hn` as root or use at most %d",
				n, need, limit, (int(limit)-200)/2)
		}
	}
	var results []relayResult
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	for _, n := range o.allocations {
		for rep := range o.repeat {
			for _, server := range o.servers {
				fmt.Fprintf(log, "relay: %d allocations against %s (run %d of %d) ...\n", n, server, rep+1, o.repeat)
				r, err := relayRow(ctx, o, server, n)
				if err != nil {
					return results, fmt.Errorf("%d allocations against %s: %w", n, server, err)
				}
				fmt.Fprintf(log, "relay:   %s\n", r.summary())
				results = append(results, r)
			}
		}
	}
	printRelayTable(out, o, summarize(results))
	return results, nil
}
