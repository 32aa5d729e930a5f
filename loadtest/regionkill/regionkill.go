// Package regionkill is `loadtest regionkill`: a paced stream across anycast
// regions of the netns lab while every instance of one region dies (needs
// root), run by labrun.Lab.RegionKill, and its table.
package regionkill

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/loadtest/cli"
	"github.com/keymesh/keymesh/loadtest/labrun"
	"github.com/keymesh/keymesh/loadtest/results"
)

// regionKillOpts configures `loadtest regionkill`.
type regionKillOpts struct {
	regions  int
	door     natlab.FrontDoor
	cfg      labrun.RegionKillConfig
	record   string
	lab      cli.Lab // --bin, --keep, -v
	interval time.Duration
	mesh     bool
}

func parseRegionKillFlags(args []string, stderr io.Writer) (regionKillOpts, error) {
	fs := flag.NewFlagSet("loadtest regionkill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o regionKillOpts
	fs.IntVar(&o.regions, "regions", 2, "regions behind the anycast addresses (2 or 3)")
	door := fs.String("frontdoor", "accel", "anycast model: accel (managed accelerator) or bgp (plain BGP anycast)")
	aType := fs.String("a-type", "port-restricted", "NAT type of A's site (nearest region r1): "+cli.NATTypeNames())
	bType := fs.String("b-type", "port-restricted", "NAT type of B's site (nearest region r2)")
	fs.StringVar(&o.cfg.Kill, "kill", "r2", "region whose instances are killed (r1 is A's, r2 is B's)")
	fs.Int64Var(&o.cfg.Rate, "rate", 64<<10, "pace of the stream from A to B, bytes per second")
	fs.DurationVar(&o.cfg.Duration, "duration", 20*time.Second, "planned length of the stream at --rate")
	fs.DurationVar(&o.cfg.KillAfter, "kill-after", 5*time.Second, "when the region dies, into the stream")
	fs.BoolVar(&o.mesh, "mesh", false, "join the instances in a mesh (as loadtest matrix --mesh), so packets for a peer leave from its home instance")
	fs.BoolVar(&o.cfg.Direct, "direct", false, "let the peers use a direct path (default: relay only, whose instances are in the regions)")
	fs.DurationVar(&o.interval, "health-interval", 200*time.Millisecond, "how often the lab's health checker asks each instance's /healthz (a region is down after 2 failed rounds)")
	o.lab.Flags(fs)
	fs.StringVar(&o.record, "record", "", "`prefix` to record the result at (prefix.json with the command line, commit and machine, prefix.md with the table), e.g. docs/results/regionkill-accel-r2")
	if err := cli.ParseOnlyFlags(fs, "regionkill",
		"Builds the NAT lab (needs root) with the servers in --regions regions behind\n"+
			"anycast addresses, a peer A in a site nearest r1 and a peer B nearest r2, streams\n"+
			"paced bytes from A to B, kills every instance of --kill partway through, and\n"+
			"reports the longest stall at B, when the front door moved the region's clients,\n"+
			"and whether every byte arrived (SHA-256 at both ends). Exits 1 when bytes were\n"+
			"lost or the stream failed.", args); err != nil {
		return o, err
	}
	var err error
	if o.door, err = natlab.ParseFrontDoor(*door); err != nil {
		return o, fmt.Errorf("--frontdoor: %w", err)
	}
	if o.cfg.AType, err = natlab.ParseNATType(*aType); err != nil {
		return o, fmt.Errorf("--a-type: %w", err)
	}
	if o.cfg.BType, err = natlab.ParseNATType(*bType); err != nil {
		return o, fmt.Errorf("--b-type: %w", err)
	}
	switch {
	case o.cfg.AType == natlab.SameNAT || o.cfg.BType == natlab.SameNAT:
		return o, errors.New("--a-type/--b-type same-nat: A and B are in different sites; pick another type")
	case o.regions < 2 || o.regions > 3:
		return o, fmt.Errorf("--regions %d: want 2 or 3", o.regions)
	case o.cfg.Rate <= 0:
		return o, fmt.Errorf("--rate %d: want 1 or more bytes per second", o.cfg.Rate)
	case o.cfg.KillAfter >= o.cfg.Duration:
		return o, fmt.Errorf("--kill-after %s: want less than --duration %s", o.cfg.KillAfter, o.cfg.Duration)
	case o.interval < 10*time.Millisecond:
		return o, fmt.Errorf("--health-interval %s: want at least 10ms", o.interval)
	}
	return o, nil
}

// Main is `loadtest regionkill`: it parses args (the flags after the name) and
// runs it.
func Main(ctx context.Context, args []string) error {
	o, err := parseRegionKillFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	cfg, cleanup, err := o.lab.Config(ctx)
	defer cleanup()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "starting the lab (%d regions behind %s anycast)...\n", o.regions, o.door)
	cfg.Regions, cfg.FrontDoor, cfg.HealthInterval = o.regions, o.door, o.interval
	if o.mesh {
		cfg.InstanceArgs = labrun.MeshArgs
	}
	lab, err := labrun.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer cli.CloseLab("regionkill", lab, o.lab.Keep)
	fmt.Fprintf(os.Stderr, "streaming %d B/s from A (%s, r1) to B (%s, r2) for %s, killing %s at %s...\n",
		o.cfg.Rate, o.cfg.AType, o.cfg.BType, o.cfg.Duration, o.cfg.Kill, o.cfg.KillAfter)
	res, err := lab.RegionKill(ctx, o.cfg)
	if err != nil {
		lab.DumpLogs(os.Stderr, 15)
		return err
	}
	if err := reportRegionKill(os.Stdout, args, o, res); err != nil {
		return err
	}
	if !res.Transfer.OK() {
		return fmt.Errorf("bytes lost: %d sent, %d received", res.Transfer.Sent, res.Transfer.Received)
	}
	return nil
}

// regionKillRecord is the data `loadtest regionkill --record` writes: the
// run's settings beside its result.
type regionKillRecord struct {
	FrontDoor      string                  `json:"front_door"`
	Regions        int                     `json:"regions"`
	Mesh           bool                    `json:"mesh"`
	HealthInterval time.Duration           `json:"health_interval_ns"`
	Config         labrun.RegionKillConfig `json:"config"`
	Result         labrun.RegionKillResult `json:"result"`
}

// reportRegionKill prints the run's table and, with --record, records it
// (args are the subcommand's flags).
func reportRegionKill(w io.Writer, args []string, o regionKillOpts, r labrun.RegionKillResult) error {
	var md strings.Builder
	printRegionKill(&md, o, r)
	if _, err := io.WriteString(w, md.String()); err != nil {
		return err
	}
	if o.record == "" {
		return nil
	}
	// The CLI processes (Pipe, Listen) are this run's handles, not results.
	r.Transfer.Pipe, r.Transfer.Listen = nil, nil
	rec := regionKillRecord{FrontDoor: string(o.door), Regions: o.regions, Mesh: o.mesh,
		HealthInterval: o.interval, Config: o.cfg, Result: r}
	return results.Write(o.record, append([]string{"regionkill"}, args...), rec, md.String())
}

func printRegionKill(w io.Writer, o regionKillOpts, r labrun.RegionKillResult) {
	path := "relay only"
	if o.cfg.Direct {
		path = "direct allowed"
	}
	if o.mesh {
		path += ", mesh"
	}
	ms := func(d time.Duration) string {
		if d == 0 {
			return "-"
		}
		return fmt.Sprintf("%d", d.Milliseconds())
	}
	fmt.Fprintf(w, "| front door | regions | A / B | path | killed | front door moved (ms after kill) | longest gap after the kill (ms) | it began (ms after kill) | longest gap (ms) | sent | received | SHA-256 equal |\n")
	fmt.Fprintf(w, "| --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	fmt.Fprintf(w, "| %s | %d | %s / %s | %s | %s at %s | %s | %s | %s | %s | %d | %d | %v |\n",
		o.door, o.regions, o.cfg.AType, o.cfg.BType, path, o.cfg.Kill, r.Killed.Round(time.Millisecond),
		ms(r.MarkedDown), ms(r.KillGap), fmt.Sprint(r.KillGapAt.Milliseconds()), ms(r.LongestGap), r.Transfer.Sent, r.Transfer.Received,
		r.Transfer.SentSum == r.Transfer.ReceivedSum)
	fmt.Fprintf(w, "\nsent SHA-256 %s, received SHA-256 %s; the longest gap began %s into the stream; health checks every %s\n",
		hex.EncodeToString(r.Transfer.SentSum[:]), hex.EncodeToString(r.Transfer.ReceivedSum[:]),
		r.GapStart.Round(time.Millisecond), o.interval)
}
