package faults

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/keymesh/keymesh/internal/testutil/debpkg"
	"github.com/keymesh/keymesh/loadtest/cli"
	"github.com/keymesh/keymesh/loadtest/labrun"
	"github.com/keymesh/keymesh/loadtest/results"
)

// faultsOpts configures `loadtest faults`.
type faultsOpts struct {
	faults []Fault
	runs   int
	rate   int64
	size   int64
	at     time.Duration
	hold   time.Duration
	idle   time.Duration
	out    string
	record string
	lab    cli.Lab // --bin, --keep, -v
}

func parseFaultsFlags(args []string, stderr io.Writer) (faultsOpts, error) {
	fs := flag.NewFlagSet("loadtest faults", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o faultsOpts
	list := fs.String("faults", "all", "comma-separated faults to inject: "+Names()+" (nat-flush: every NAT type's)")
	fs.IntVar(&o.runs, "runs", 5, "runs per fault, each with fresh sites and daemons")
	rate := fs.Float64("rate", 4, "the stream's pace in MiB/s")
	size := fs.Int64("size", 40, "the stream's length in MiB (it must outlast --at, --hold and the recovery)")
	fs.DurationVar(&o.at, "at", 2*time.Second, "when, into the stream, the fault strikes")
	fs.DurationVar(&o.hold, "hold", 3*time.Second, "how long a cut (direct-cut, udp-block; udp-block at least 5s, so that the stream relay taking over is what is measured) lasts before it is lifted")
	fs.DurationVar(&o.idle, "idle", 12*time.Second, "how long the stream pauses in nat-idle runs (the NATs' UDP mapping timeout is 10s)")
	fs.StringVar(&o.out, "out", filepath.Join("loadtest", "results"), "`directory` for faults.md and faults.json")
	fs.StringVar(&o.record, "record", "", "`prefix` to record the results at (prefix.json with the command line, commit and machine, prefix.md with the table), e.g. docs/results/faults")
	o.lab.Flags(fs)
	if err := cli.ParseOnlyFlags(fs, "faults",
		"Builds the NAT lab (network namespaces, needs root), runs the rendezvous and the\n"+
			"relay on a lab server, and for each fault starts two peers in fresh sites, keeps a\n"+
			"paced stream from A to B and injects the fault: the longest gap in delivered bytes,\n"+
			"the time until data flows again and until the best path is back, and whether every\n"+
			"byte arrived (SHA-256). Writes the table and exits 1 when a fault misses a goal.", args); err != nil {
		return o, err
	}
	var err error
	if o.faults, err = ParseList(*list); err != nil {
		return o, fmt.Errorf("--faults: %w", err)
	}
	o.rate = int64(*rate * (1 << 20))
	o.size = *size << 20
	switch {
	case o.runs <= 0:
		return o, fmt.Errorf("--runs %d: want 1 or more", o.runs)
	case o.rate <= 0:
		return o, fmt.Errorf("--rate %g: want more than 0 MiB/s", *rate)
	case *size <= 0:
		return o, fmt.Errorf("--size %d: want 1 MiB or more", *size)
	case o.at <= 0 || o.hold <= 0 || o.idle <= 0:
		return o, errors.New("--at, --hold and --idle: want more than 0 (e.g. 2s)")
	}
	if need := o.at + o.hold + 3*time.Second; time.Duration(float64(o.size)/float64(o.rate)*float64(time.Second)) < need {
		return o, fmt.Errorf("--size %d MiB at --rate %g MiB/s lasts less than --at + --hold + 3s (%s): raise --size", *size, *rate, need)
	}
	return o, nil
}

// Main is `loadtest faults`: it parses args (the flags after the name) and
// runs it.
func Main(ctx context.Context, args []string) error {
	o, err := parseFaultsFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	if err := cli.NeedRoot(); err != nil {
		return err
	}
	for _, f := range o.faults {
		if f.Kind == NATFlush {
			if _, err := debpkg.Ensure(ctx, "conntrack", "conntrack"); err != nil {
				return fmt.Errorf("nat-flush needs conntrack: %w", err)
			}
			break
		}
	}
	base, cleanup, err := o.lab.Config(ctx)
	defer cleanup()
	if err != nil {
		return err
	}
	regionsCfg := base
	regionsCfg.Regions, regionsCfg.InstanceArgs = 2, labrun.MeshArgs
	bar := cli.Progress(len(o.faults)*o.runs, "faults")
	started := time.Now()
	var one, regions []Fault
	for _, f := range o.faults {
		if f.Regions() {
			regions = append(regions, f)
		} else {
			one = append(one, f)
		}
	}
	var all []Result
	seq := 0
	for _, set := range []struct {
		faults []Fault
		cfg    labrun.Config
		what   string
	}{
		{one, base, "rendezvous and relay on a lab server"},
		{regions, regionsCfg,
			"two regions behind anycast addresses, a shared Redis, the instance mesh"},
	} {
		if len(set.faults) == 0 || ctx.Err() != nil {
			continue
		}
		fmt.Fprintf(os.Stderr, "starting the lab (%s)...\n", set.what)
		rs, err := runFaultsIn(ctx, set.cfg, set.faults, o, bar, &seq)
		all = append(all, rs...)
		if err != nil {
			return err
		}
	}
	_ = bar.Finish()
	fmt.Fprintln(os.Stderr)
	if len(all) == 0 {
		return errors.New("no run completed")
	}
	rep := Summarize(all, DefaultGoals, o.rate, o.size)
	if err := rep.WriteAll(o.out); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	var md strings.Builder
	if err := rep.Markdown(&md); err != nil {
		return err
	}
	fmt.Print(md.String())
	if o.record != "" {
		if err := results.Write(o.record, append([]string{"faults"}, args...), rep, md.String()); err != nil {
			return err
		}
	}
	fmt.Printf("\n%d runs in %s; results in %s (faults.md, faults.json)\n", len(all), time.Since(started).Round(time.Second), o.out)
	for _, row := range rep.Rows {
		for _, e := range row.Errors {
			fmt.Fprintf(os.Stderr, "  %s: %s\n", row.Fault, e)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if f := rep.Failures(); len(f) > 0 {
		return fmt.Errorf("%d fault(s) missed a goal: %s", len(f), strings.Join(f, ", "))
	}
	return nil
}

// runFaultsIn starts a lab of cfg and runs each fault o.runs times in it.
func runFaultsIn(ctx context.Context, cfg labrun.Config, fs []Fault, o faultsOpts, bar *progressbar.ProgressBar, seq *int) ([]Result, error) {
	lab, err := labrun.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer cli.CloseLab("faults", lab, o.lab.Keep)
	var all []Result
	for _, f := range fs {
		for run := 1; run <= o.runs && ctx.Err() == nil; run++ {
			*seq++
			bar.Describe(fmt.Sprintf("%s run %d", f, run))
			r := Run(ctx, lab, f, run, Options{
				Rate: o.rate, Size: o.size, At: o.at, Hold: o.hold, Idle: o.idle,
				Name: fmt.Sprintf("f%d", *seq),
			})
			all = append(all, r)
			_ = bar.Add(1)
		}
	}
	return all, nil
}
