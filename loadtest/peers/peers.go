// Package peers is `loadtest peers`: N simulated peers registering and
// connecting against rendezvous servers (in this process, a spawned
// rendezvous binary, or servers outside), with a memory or Redis registry.
package peers

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/keymesh/keymesh/internal/flagenv"
	"github.com/keymesh/keymesh/internal/rendezvous"
	resultsrec "github.com/keymesh/keymesh/loadtest/results"
)

// peersOpts are the flags of `loadtest peers`.
type peersOpts struct {
	count     int
	spawn     string   // rendezvous binary to start per scenario
	spawnArgs []string // its extra flags
	record    string   // --record prefix
	keyFile   string   // the spawned servers' one key file
	ids       *idPool  // identities kept across scenarios (--rendezvous)
	perSource int      // peers sharing one socket and source address
	servers   []string // connect strings; empty: run one in-process
	admins    []string // admin URLs of the external servers
	registry  string   // in-process: memory or redis
	instances int      // in-process instances on one SO_REUSEPORT address
	compare   []scenario
	redisURL  string
	ttl       time.Duration
	refresh   time.Duration
	rate      float64 // in-process server's per-source rate limit
	inflight  int
	workers   int
	duration  time.Duration
	timeout   time.Duration
}

func parsePeersFlags(args []string, stderr io.Writer) (peersOpts, error) {
	var o peersOpts
	fs := flag.NewFlagSet("loadtest peers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = flagenv.Usage(fs)
	var servers, admins flagenv.Strings
	fs.IntVar(&o.count, "count", 1000, "simulated peers")
	fs.StringVar(&o.record, "record", "", "also write the table and its data to `prefix`.md and prefix.json (with date, commit, CPU and the command line), e.g. docs/results/peers-1m")
	fs.IntVar(&o.perSource, "per-source", 1, "peers sharing one UDP socket and loopback source address, as behind one NAT (1: a socket each, at most 62500 peers; more lets a million fit in a few thousand descriptors; the server's per-source limits then count that many peers)")
	fs.Var(&servers, "server", "rendezvous connect string host:port#<id> (repeatable; peers spread over them); none: start one in-process")
	fs.Var(&admins, "admin", "admin URL of an external server, for its memory (repeatable)")
	fs.StringVar(&o.spawn, "rendezvous", "", "`binary` of the rendezvous to start (the real server, one process per scenario, on loopback with its admin endpoint) instead of the in-process one; --registry or --compare pick its registry")
	spawnArgs := fs.String("rendezvous-args", "", "extra flags for --rendezvous (space-separated), e.g. to raise its per-source limits and caches")
	fs.StringVar(&o.registry, "registry", "memory", "in-process server's registry: memory or redis")
	fs.StringVar(&o.redisURL, "redis", "", "Redis URL for --registry redis")
	fs.IntVar(&o.instances, "instances", 1, "in-process rendezvous instances sharing one UDP address (SO_REUSEPORT) and the registry; more than 1 needs --registry redis")
	compare := fs.String("compare", "", "run several in-process setups one after another and print them side by side: comma-separated registry:instances, e.g. memory:1,redis:1,redis:3 (replaces --registry and --instances)")
	fs.DurationVar(&o.ttl, "ttl", rendezvous.DefaultTTL, "in-process server's registration TTL")
	fs.DurationVar(&o.refresh, "refresh", rendezvous.DefaultRefresh, "in-process server's refresh interval")
	fs.Float64Var(&o.rate, "rate-limit", rendezvous.DefaultRate, "in-process server's per-source rate limit (datagrams/s; negative disables)")
	fs.IntVar(&o.inflight, "inflight", 256, "registrations in flight at once during the registration phase")
	fs.IntVar(&o.workers, "workers", 64, "concurrent connects during the steady phase")
	fs.DurationVar(&o.duration, "duration", 25*time.Second, "steady phase: connects while the peers refresh (covers one refresh at the default 20s); 0 skips it")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "deadline of the registration phase")
	err := flagenv.Parse(fs, args)
	if err != nil {
		return o, err
	}
	o.servers, o.admins = servers, admins
	o.spawnArgs = strings.Fields(*spawnArgs)
	if *compare != "" {
		if o.compare, err = parseScenarios(*compare); err != nil {
			return o, err
		}
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.count < 2:
		return o, errors.New("--count must be at least 2 (peers connect to each other)")
	case o.perSource < 1 || o.perSource > 4096:
		return o, fmt.Errorf("--per-source %d: want 1 to 4096", o.perSource)
	case o.count > 250*250*o.perSource:
		return o, fmt.Errorf("--count %d: at most %d with --per-source %d (250*250 loopback source addresses)", o.count, 250*250*o.perSource, o.perSource)
	case o.inflight < 1 || o.workers < 1:
		return o, errors.New("--inflight and --workers must be at least 1")
	case o.registry != "memory" && o.registry != "redis":
		return o, fmt.Errorf("--registry %q: want memory or redis", o.registry)
	case o.registry == "redis" && o.redisURL == "":
		return o, errors.New("--registry redis needs --redis URL")
	case len(o.servers) > 0 && o.redisURL != "" && o.spawn == "":
		return o, errors.New("--redis configures the in-process server; with --server, point the servers themselves at Redis")
	case o.duration < 0:
		return o, errors.New("--duration must not be negative (0 skips the steady phase)")
	case o.refresh <= 0 || o.ttl <= o.refresh:
		return o, errors.New("--refresh must be positive and below --ttl")
	case o.instances < 1 || o.instances > 64:
		return o, fmt.Errorf("--instances %d: want 1 to 64", o.instances)
	case o.instances > 1 && o.registry != "redis":
		return o, errors.New("--instances above 1 needs --registry redis: instances with their own memory registries do not know each other's peers")
	case o.spawn != "" && len(o.servers) > 0:
		return o, errors.New("--rendezvous starts the server; --server names one already running: not both")
	case o.spawn == "" && len(o.spawnArgs) > 0:
		return o, errors.New("--rendezvous-args needs --rendezvous")
	case o.spawn != "" && o.instances > 1:
		return o, errors.New("--rendezvous starts one instance: --instances 1")
	case (o.instances > 1 || len(o.compare) > 0) && len(o.servers) > 0:
		return o, errors.New("--instances and --compare start in-process servers; with --server, run the instances yourself")
	}
	for _, sc := range o.compare {
		if sc.registry == "redis" && o.redisURL == "" {
			return o, fmt.Errorf("--compare %s needs --redis URL", sc)
		}
	}
	return o, nil
}

// scenario is one in-process setup of --compare.
type scenario struct {
	registry  string
	instances int
}

func (s scenario) String() string { return fmt.Sprintf("%s:%d", s.registry, s.instances) }

// label names the scenario in a table header.
func (s scenario) label() string {
	if s.instances == 1 {
		return fmt.Sprintf("%s, 1 instance", s.registry)
	}
	return fmt.Sprintf("%s, %d instances", s.registry, s.instances)
}

// parseScenarios parses "memory:1,redis:3".
func parseScenarios(list string) ([]scenario, error) {
	var out []scenario
	for _, f := range strings.Split(list, ",") {
		reg, n, ok := strings.Cut(strings.TrimSpace(f), ":")
		count, err := strconv.Atoi(n)
		switch {
		case !ok || err != nil || count < 1 || count > 64:
			return nil, fmt.Errorf("--compare %q: want registry:instances items such as memory:1,redis:3", f)
		case reg != "memory" && reg != "redis":
			return nil, fmt.Errorf("--compare %q: registry memory or redis", f)
		case reg == "memory" && count > 1:
			return nil, fmt.Errorf("--compare %q: memory registries are not shared: only memory:1", f)
		}
		out = append(out, scenario{registry: reg, instances: count})
	}
	return out, nil
}

// Main simulates --count peers registering, refreshing and connecting
// to each other against rendezvous servers and prints a Markdown table.
func Main(ctx context.Context, args []string) error {
	o, err := parsePeersFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	if o.spawn != "" {
		// One server key for every scenario, so the peers' identities
		// (an X25519 each with the server's key) are made once.
		dir, err := os.MkdirTemp("", "loadtest-peers-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		o.keyFile, o.ids = filepath.Join(dir, "rendezvous.key"), &idPool{}
	}
	var results []*peersResult
	var md bytes.Buffer
	if len(o.compare) == 0 {
		bench := peersBench
		if o.spawn != "" {
			bench = spawnedBench
		}
		res, err := bench(ctx, o, os.Stderr)
		if err != nil {
			return err
		}
		res.table(&md)
		results = []*peersResult{res}
	} else {
		if results, err = peersCompare(ctx, o, os.Stderr); err != nil {
			return err
		}
		compareTable(&md, results)
	}
	if _, err := os.Stdout.Write(md.Bytes()); err != nil {
		return err
	}
	if o.record != "" {
		if err := resultsrec.Write(o.record, append([]string{"peers"}, args...), peersData(results), md.String()); err != nil {
			return fmt.Errorf("--record: %w", err)
		}
		fmt.Fprintf(os.Stderr, "recorded %s.json and %s.md\n", o.record, o.record)
	}
	return nil
}

// peersCompare runs peersBench once per --compare scenario.
func peersCompare(ctx context.Context, o peersOpts, progress io.Writer) ([]*peersResult, error) {
	var out []*peersResult
	for _, sc := range o.compare {
		so := o
		so.registry, so.instances, so.compare = sc.registry, sc.instances, nil
		fmt.Fprintf(progress, "== %s\n", sc.label())
		bench := peersBench
		if o.spawn != "" {
			bench = spawnedBench
		}
		res, err := bench(ctx, so, progress)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sc, err)
		}
		out = append(out, res)
	}
	return out, nil
}
