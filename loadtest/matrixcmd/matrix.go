// Package matrixcmd is `loadtest matrix`: traversal success by NAT-type pair
// in the netns lab (needs root). It parses the flags, starts the lab of
// package labrun, runs its matrix and writes the report of package matrix;
// it is not in package matrix because labrun imports matrix.
package matrixcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/internal/rzclient"
	"github.com/keymesh/keymesh/loadtest/cli"
	"github.com/keymesh/keymesh/loadtest/labrun"
	"github.com/keymesh/keymesh/loadtest/matrix"
	"github.com/keymesh/keymesh/loadtest/results"
)

// matrixOpts configures `loadtest matrix`.
type matrixOpts struct {
	types        []natlab.NATType
	trials       int
	out          string
	timeout      time.Duration
	parallel     int
	record       string
	quick        bool
	lab          cli.Lab // --bin, --keep, -v
	regions      int
	door         natlab.FrontDoor
	rdvArgs      string
	relArgs      string
	mesh         bool
	meshRegistry bool
	// server, stream and routes: servers outside the lab (--server).
	server string
	stream string
	routes []netip.Prefix
}

func parseMatrixFlags(args []string, stderr io.Writer) (matrixOpts, error) {
	fs := flag.NewFlagSet("loadtest matrix", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o matrixOpts
	types := fs.String("types", "all", "comma-separated NAT types to pair: "+cli.NATTypeNames()+" (same-nat runs as its own scenario)")
	fs.IntVar(&o.trials, "trials", 10, "trials per ordered pair")
	fs.StringVar(&o.out, "out", filepath.Join("loadtest", "results"), "`directory` for matrix.md, matrix.json, matrix.svg (and logs of failed trials)")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Second, "per trial: how long A pings B waiting for a direct path")
	fs.IntVar(&o.parallel, "parallel", 1, "pairs run at once, each in its own sites (more is faster but loads the 2 cores)")
	o.lab.Flags(fs)
	fs.StringVar(&o.record, "record", "", "`prefix` to record the results at (prefix.json with the command line, commit and machine, prefix.md with the table), e.g. docs/results/matrix-regions-bgp")
	fs.BoolVar(&o.quick, "quick", false, "end each trial once its pair's expected outcome is reached (pass/fail only: a pair expected to relay does not wait --timeout for a direct path)")
	fs.IntVar(&o.regions, "regions", 0, "run the servers in this many regions behind anycast addresses, A's site nearest region 1 and B's region 2 (0: one server host)")
	door := fs.String("frontdoor", "accel", "anycast model with --regions: accel (managed accelerator: DNAT, instances' own sends leave from their regional address) or bgp (every instance holds the anycast address)")
	fs.StringVar(&o.rdvArgs, "rendezvous-args", "", "extra flags for every rendezvous instance with --regions; {name} {region} {addr} {anycast} {listen} {secret} {peers} {peers:PORT} are filled in per instance")
	fs.BoolVar(&o.mesh, "mesh", false, "with --regions, join the instances in a mesh (relays: --instance, --mesh-listen, --mesh-peers; rendezvous: --mesh-listen; both --peer-secret-file), so a Punch and a relayed packet leave from the peer's home instance")
	fs.BoolVar(&o.meshRegistry, "mesh-registry", false, "with --mesh, the instances claim their numbers and find each other in the lab's Redis (--mesh-registry) instead of fixed --instance and --mesh-peers lists")
	fs.StringVar(&o.relArgs, "relay-args", "", "extra flags for every relay instance with --regions, with the same fill-ins as --rendezvous-args")
	fs.StringVar(&o.server, "server", "", "`connect string` (host:port#server-id, as the rendezvous prints it) of a rendezvous outside the lab: run the lab's NATs against it instead of starting servers (the lab's internet is linked to this host, which must reach the servers; see --route)")
	fs.StringVar(&o.stream, "stream-relay", "", "with --server: the stream relay `URL` (wss://host:port/v1/tunnel#relay-id) given to every peer (udp-blocked peers need it to register)")
	routes := fs.String("route", "", "with --server: comma-separated `prefixes` the lab sends to this host: the rendezvous's and every relay's addresses (default: the rendezvous's address/32); the servers must route the lab's 203.0.113.0/24 and 198.51.100.0/24 back to this host")
	if err := cli.ParseOnlyFlags(fs, "matrix",
		"Builds the NAT lab (network namespaces, needs root), runs the rendezvous and the\n"+
			"relay on a lab server, and for every ordered pair of NAT types starts fresh peer\n"+
			"daemons in two sites and has A ping B by peer ID: direct, relay or none, time to\n"+
			"the first reply and to a direct path. Writes the table and exits 1 when a pair\n"+
			"falls below its expected outcome.", args); err != nil {
		return o, err
	}
	var err error
	if o.types, err = labrun.ParseTypes(*types); err != nil {
		return o, fmt.Errorf("--types: %w", err)
	}
	switch {
	case o.trials <= 0:
		return o, fmt.Errorf("--trials %d: want 1 or more", o.trials)
	case o.timeout < time.Second:
		return o, fmt.Errorf("--timeout %s: want at least 1s", o.timeout)
	case o.parallel <= 0:
		return o, fmt.Errorf("--parallel %d: want 1 or more", o.parallel)
	case o.regions < 0 || o.regions > 3:
		return o, fmt.Errorf("--regions %d: want 0 (one server host) to 3", o.regions)
	case o.regions == 0 && (o.rdvArgs != "" || o.relArgs != "" || o.mesh):
		return o, errors.New("--mesh, --rendezvous-args and --relay-args are for instances: add --regions 2")
	case o.meshRegistry && !o.mesh:
		return o, errors.New("--mesh-registry is a kind of mesh: add --mesh")
	}
	if o.server == "" && (o.stream != "" || *routes != "") {
		return o, errors.New("--stream-relay and --route are for servers outside the lab: add --server")
	}
	if o.server != "" && (o.regions > 0) {
		return o, errors.New("--server runs no servers in the lab: drop --regions")
	}
	for _, f := range strings.Split(*routes, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return o, fmt.Errorf("--route %q: want a prefix such as 192.0.2.0/24 or an address", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		o.routes = append(o.routes, p.Masked())
	}
	if o.door, err = natlab.ParseFrontDoor(*door); err != nil {
		return o, fmt.Errorf("--frontdoor: %w", err)
	}
	return o, nil
}

// Main is `loadtest matrix`: it parses args (the flags after the name) and
// runs it.
func Main(ctx context.Context, args []string) error {
	o, err := parseMatrixFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	cfg, cleanup, err := o.lab.Config(ctx)
	defer cleanup()
	if err != nil {
		return err
	}
	cfg.Regions, cfg.FrontDoor = o.regions, o.door
	if o.server != "" {
		ext, err := matrixExternal(o)
		if err != nil {
			return err
		}
		cfg.External = ext
		fmt.Fprintf(os.Stderr, "starting the lab (servers outside it: %s)...\n", ext.Connect)
	} else {
		fmt.Fprintln(os.Stderr, "starting the lab (rendezvous and relay on a lab server)...")
	}
	if o.rdvArgs != "" || o.relArgs != "" || o.mesh {
		cfg.InstanceArgs = func(in *labrun.Instance, l *labrun.Lab) []string {
			var args []string
			switch {
			case o.meshRegistry:
				args = labrun.MeshRegistryArgs(in, l)
			case o.mesh:
				args = labrun.MeshArgs(in, l)
			}
			tmpl := o.relArgs
			if in.Role == labrun.RoleRendezvous {
				tmpl = o.rdvArgs
			}
			return append(args, labrun.ExpandArgs(tmpl, in, l)...)
		}
	}
	lab, err := labrun.Start(ctx, cfg)
	if err != nil {
		return err
	}
	// Close runs on every return, SIGINT included (ctx is cancelled, the
	// trials return, and we get here).
	defer cli.CloseLab("matrix", lab, o.lab.Keep)

	pairs := labrun.MatrixPairs(o.types)
	total := len(pairs) * o.trials
	bar := cli.Progress(total, "matrix")
	logDir := filepath.Join(o.out, "logs")
	started := time.Now()
	trials, runErr := lab.RunMatrix(ctx, labrun.MatrixConfig{
		Types:          o.types,
		Trials:         o.trials,
		Trial:          labrun.TrialOptions{Timeout: o.timeout},
		Parallel:       o.parallel,
		StopAtExpected: o.quick,
		LogDir:         logDir,
		OnTrial: func(t matrix.Trial) {
			bar.Describe(fmt.Sprintf("%s -> %s: %s", t.A, t.B, t.Outcome))
			_ = bar.Add(1)
		},
	})
	_ = bar.Finish()
	fmt.Fprintln(os.Stderr)
	if len(trials) == 0 {
		if runErr != nil {
			return runErr
		}
		return errors.New("no trial ran")
	}

	rep := matrix.Summarize(trials)
	if err := rep.WriteAll(o.out); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	var md strings.Builder
	if err := rep.Markdown(&md); err != nil {
		return err
	}
	fmt.Fprintf(&md, "\n%d trials in %s; results in %s (matrix.md, matrix.json, matrix.svg)\n",
		len(trials), time.Since(started).Round(time.Second), o.out)
	if o.regions > 0 {
		home := "r2"
		if o.regions == 1 {
			home = "r1"
		}
		mesh := ""
		if o.mesh {
			mesh = ", instances in a mesh"
		}
		if o.meshRegistry {
			mesh += " (members from Redis)"
		}
		fmt.Fprintf(&md, "servers: %d regions behind %s anycast (%s)%s; A homed in r1, B in %s\n", o.regions, o.door, lab.Connect, mesh, home)
	}
	if o.server != "" {
		fmt.Fprintf(&md, "servers: outside the lab (%s), reached through this host\n", lab.Connect)
	}
	fmt.Print(md.String())
	if err := recordMatrix(o, args, rep, md.String()); err != nil {
		return err
	}
	printTrialErrors(os.Stderr, trials)
	if runErr != nil {
		return fmt.Errorf("matrix stopped early: %w", runErr)
	}
	if f := rep.Failures(); len(f) > 0 {
		return fmt.Errorf("%d pair(s) below the expected outcome:\n  %s", len(f), strings.Join(f, "\n  "))
	}
	return nil
}

// recordMatrix writes the report and what was printed at --record, if given
// (args are the subcommand's flags).
func recordMatrix(o matrixOpts, args []string, rep matrix.Report, markdown string) error {
	if o.record == "" {
		return nil
	}
	return results.Write(o.record, append([]string{"matrix"}, args...), rep, markdown)
}

// matrixExternal resolves --server here, on the host (the lab's hosts
// resolve no names), and says whether the host must forward: it does when
// an address the lab sends to is not one of the host's own.
func matrixExternal(o matrixOpts) (*labrun.External, error) {
	addr, id, err := rzclient.ParseServer(o.server)
	if err != nil {
		return nil, fmt.Errorf("--server: %w", err)
	}
	ext := &labrun.External{Connect: fmt.Sprintf("%s#%s", addr, id), StreamURL: o.stream, Routes: o.routes}
	targets := []netip.Addr{addr.Addr()}
	for _, r := range o.routes {
		targets = append(targets, r.Addr())
	}
	for _, a := range targets {
		if !hostOwns(a) {
			ext.Forward = true
		}
	}
	return ext, nil
}

// hostOwns reports whether a is one of this host's own addresses (a UDP
// socket can be bound to it).
func hostOwns(a netip.Addr) bool {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// printTrialErrors lists, per pair, the distinct errors of its trials that
// fell below the expected outcome.
func printTrialErrors(w io.Writer, trials []matrix.Trial) {
	header := false
	for _, t := range trials {
		if t.Outcome.AtLeast(matrix.Expected(t.A, t.B)) || t.Err == "" {
			continue
		}
		if !header {
			fmt.Fprintln(w, "trials below the expected outcome:")
			header = true
		}
		fmt.Fprintf(w, "  %s -> %s: %s: %s\n", t.A, t.B, t.Outcome, t.Err)
	}
}
