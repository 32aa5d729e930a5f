package attack

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/keymesh/keymesh/internal/flagenv"
	"github.com/keymesh/keymesh/loadtest/cli"
	"github.com/keymesh/keymesh/loadtest/results"
)

// attackOpts are the flags of `loadtest attack`.
type attackOpts struct {
	cfg    Config
	out    string
	record string
	bin    string
	short  bool
}

func parseAttackFlags(args []string, stderr io.Writer) (attackOpts, error) {
	var o attackOpts
	fs := flag.NewFlagSet("loadtest attack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rate := fs.String("rate", "100Mbit", "each flood's rate: bits/s (100Mbit, 500kbit, 2Gbit) or packets/s (50kpps, 20000pps); the table states what was achieved")
	only := fs.String("only", "", "comma-separated attacks to run (default all): "+strings.Join(Names(), ", "))
	var rzArgs, relayArgs flagenv.Strings
	fs.Var(&rzArgs, "rendezvous-arg", "extra rendezvous flag, e.g. --rendezvous-arg=--rate-limit=20 (repeatable)")
	fs.Var(&relayArgs, "relay-arg", "extra relay flag (repeatable)")
	fs.BoolVar(&o.cfg.JoinToken, "join-token", false, "run the rendezvous with a join token the legitimate peers know and the attacker does not")
	fs.DurationVar(&o.cfg.Duration, "duration", 10*time.Second, "how long each attack lasts")
	fs.Float64Var(&o.cfg.LegitRate, "legit-rate", 20, "legitimate registrations, connects, binds and relayed datagrams started per second, each")
	fs.IntVar(&o.cfg.Peers, "peers", 16, "long-lived legitimate peers (they connect to each other)")
	fs.IntVar(&o.cfg.Workers, "workers", 2, "goroutines writing each flood")
	fs.IntVar(&o.cfg.MaxHeld, "max-held", 20000, "most TURN allocations or tunnels a holding attack takes (bounds the attacker's own sockets)")
	th := DefaultThresholds
	fs.Float64Var(&th.MinSuccess, "min-success", th.MinSuccess, "threshold: least share of legitimate registrations, connects and binds that succeed")
	fs.DurationVar(&th.MaxP99, "max-p99", th.MaxP99, "threshold: their p99 latency must stay below this")
	fs.Float64Var(&th.MaxPeerReflection, "max-peer-reflection", th.MaxPeerReflection, "threshold: bytes a peer's probes bring the victims a registered attacker named, over the attacker's bytes (QUIC's 3x before address validation)")
	fs.Float64Var(&th.MaxAmplification, "max-amplification", th.MaxAmplification, "threshold: server bytes out over attacker bytes in (UDP payload) for spoofed requests")
	fs.Float64Var(&th.MaxReflectPPS, "max-reflect-pps", th.MaxReflectPPS, "threshold: STUN Binding answers per second one spoofed source may get")
	maxRSS := fs.Int("max-rss", int(th.MaxRSS>>20), "threshold: each server's resident memory, MiB")
	maxGrowth := fs.Int("max-growth", int(th.MaxGrowth>>20), "threshold: how much each server's resident memory may grow during one attack, MiB")
	fs.BoolVar(&o.short, "short", false, "the CI form: 2.5s per attack, 20 legitimate operations/s, 8 peers (overrides --duration, --legit-rate, --peers)")
	fs.StringVar(&o.out, "out", filepath.Join("loadtest", "results"), "`directory` for attack.md and attack.json")
	fs.StringVar(&o.record, "record", "", "`prefix` to record the results at (prefix.json with the command line, commit and machine, prefix.md with the table), e.g. docs/results/attack")
	fs.StringVar(&o.bin, "bin", "", "`directory` holding prebuilt rendezvous and relay binaries (default: go build into a temporary directory)")
	verbose := fs.Bool("v", false, "log progress on stderr")
	if err := cli.ParseOnlyFlags(fs, "attack",
		"Builds a lab of network namespaces (needs root), and for each attack starts fresh\n"+
			"rendezvous and relay binaries (TURN and the TLS stream relay on), keeps legitimate\n"+
			"peers registering, connecting, binding and relaying, and runs the attack: floods with\n"+
			"spoofed sources at --rate, or strangers holding records, allocations and tunnels.\n"+
			"Prints a Markdown table, writes attack.md and attack.json, and exits 1 when an attack\n"+
			"breaks a threshold.\n\nattacks: "+strings.Join(Names(), ", "), args); err != nil {
		return o, err
	}
	var err error
	if o.cfg.Rate, err = ParseRate(*rate); err != nil {
		return o, fmt.Errorf("--rate: %w", err)
	}
	if *only != "" {
		for _, n := range strings.Split(*only, ",") {
			o.cfg.Attacks = append(o.cfg.Attacks, strings.TrimSpace(n))
		}
		if _, err := Select(o.cfg.Attacks); err != nil {
			return o, fmt.Errorf("--only: %w", err)
		}
	}
	if o.short {
		o.cfg.Short()
	}
	switch {
	case o.cfg.Duration < time.Second:
		return o, fmt.Errorf("--duration %s: want at least 1s", o.cfg.Duration)
	case o.cfg.LegitRate <= 0 || o.cfg.LegitRate > 1000:
		return o, fmt.Errorf("--legit-rate %v: want more than 0 and at most 1000", o.cfg.LegitRate)
	case o.cfg.Peers < 2:
		return o, fmt.Errorf("--peers %d: want at least 2 (they connect to each other)", o.cfg.Peers)
	case o.cfg.Workers < 1 || o.cfg.Workers > 64:
		return o, fmt.Errorf("--workers %d: want 1 to 64", o.cfg.Workers)
	case o.cfg.MaxHeld < 1:
		return o, fmt.Errorf("--max-held %d: want 1 or more", o.cfg.MaxHeld)
	case th.MinSuccess < 0 || th.MinSuccess > 1:
		return o, fmt.Errorf("--min-success %v: a share from 0 to 1", th.MinSuccess)
	case *maxRSS < 1:
		return o, fmt.Errorf("--max-rss %d: want 1 MiB or more", *maxRSS)
	}
	if *maxGrowth < 1 {
		return o, fmt.Errorf("--max-growth %d: want 1 MiB or more", *maxGrowth)
	}
	th.MaxRSS, th.MaxGrowth = int64(*maxRSS)<<20, int64(*maxGrowth)<<20
	o.cfg.Thresholds = th
	o.cfg.RendezvousArgs, o.cfg.RelayArgs = rzArgs, relayArgs
	if *verbose {
		o.cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return o, nil
}

// Main is `loadtest attack`: it parses args (the flags after the name) and
// runs it.
func Main(ctx context.Context, args []string) error {
	o, err := parseAttackFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root: the attack lab makes network namespaces (run with sudo)")
	}
	bins, cleanup, err := cli.LabBinaries(ctx, o.bin)
	if err != nil {
		return err
	}
	defer cleanup()
	o.cfg.Bins = Binaries{Rendezvous: bins.Rendezvous, Relay: bins.Relay, Peer: bins.Peer}
	attacks, _ := Select(o.cfg.Attacks)
	bar := progressbar.NewOptions(len(attacks),
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription("attack"),
		progressbar.OptionShowCount(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionClearOnFinish(),
	)
	o.cfg.OnStart = func(name string) { bar.Describe(name) }
	o.cfg.OnDone = func(r Result) {
		v := "pass"
		if !r.Pass() {
			v = "FAIL"
		}
		bar.Describe(fmt.Sprintf("%s: %s", r.Attack, v))
		_ = bar.Add(1)
	}
	rep, runErr := Run(ctx, o.cfg)
	_ = bar.Finish()
	fmt.Fprintln(os.Stderr)
	if rep == nil || len(rep.Results) == 0 {
		if runErr != nil {
			return runErr
		}
		return errors.New("no attack ran")
	}
	if err := rep.WriteAll(o.out); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	var md strings.Builder
	if err := rep.Markdown(&md); err != nil {
		return err
	}
	fmt.Print(md.String())
	if err := recordAttack(o, args, rep, md.String()); err != nil {
		return err
	}
	fmt.Printf("\nresults in %s (attack.md, attack.json)\n", o.out)
	if runErr != nil {
		return fmt.Errorf("stopped early: %w", runErr)
	}
	if f := rep.Failed(); len(f) > 0 {
		return fmt.Errorf("%d threshold(s) broken", len(f))
	}
	return nil
}

// recordAttack writes the report and the table it printed at --record, if
// given (args are the subcommand's flags).
func recordAttack(o attackOpts, args []string, rep *Report, markdown string) error {
	if o.record == "" {
		return nil
	}
	return results.Write(o.record, append([]string{"attack"}, args...), rep, markdown)
}
