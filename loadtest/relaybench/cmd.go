package relaybench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keymesh/keymesh/loadtest/cli"
	"github.com/keymesh/keymesh/loadtest/results"
)

// relayCompareConfig is the `loadtest relay` command line.
type relayCompareConfig struct {
	opts   Options
	bin    string // prebuilt relay, derper and derpgen
	record string
}

func parseRelayCompare(args []string, stderr io.Writer) (relayCompareConfig, error) {
	var c relayCompareConfig
	o := &c.opts
	fs := flag.NewFlagSet("loadtest relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ours := fs.String("servers", "ticket,stream,turn", "keymesh's relays to measure: ticket (UDP ticket relay), stream (TLS stream relay), turn (TURN)")
	against := fs.String("against", "derper,coturn", "other servers in the same run: derper (Tailscale's DERP server, built from tools/derper), coturn (Debian's turnserver); empty for none")
	flows := fs.String("flows", "10,100,1000", "comma-separated flow counts; a flow is one sender socket or client to one receiver")
	rates := fs.String("rates", "20000,40000,80000,120000,160000,200000,250000", "offered packets per second of the steps, ascending; a sweep stops after the first step that loses more than 0.1% or is sent below 90% of its rate")
	fs.DurationVar(&o.Step, "step", 2*time.Second, "length of each step")
	fs.IntVar(&o.Size, "size", 1200, "payload bytes per packet")
	fs.IntVar(&o.Batch, "batch", 32, "datagrams per sendmmsg of the UDP generator")
	segments := fs.String("segments", "1,16", "generator modes, a table block each: 1 sends datagrams one at a time (--batch per sendmmsg), N sends runs of N same-size datagrams per message with UDP_SEGMENT, as keymesh peers do (UDP servers; derper and the stream relay get one frame per packet in every mode)")
	fs.IntVar(&o.Receivers, "receivers", 64, "most receiving sockets (or DERP clients); flows share them beyond this")
	fs.IntVar(&o.Repeat, "repeat", 1, "runs of every server and flow count, servers alternating; the table shows medians and the lowest and highest run")
	fs.IntVar(&o.ServerCore, "server-core", 0, "core every server is pinned to")
	fs.IntVar(&o.GenCore, "generator-core", 1, "core the generator and receivers (this process, derpgen) are pinned to")
	fs.StringVar(&c.bin, "bin", "", "directory with prebuilt relay, derper and derpgen (default: build them into a temporary directory)")
	fs.StringVar(&c.record, "record", "", "also write the table and data to `prefix`.md and prefix.json (e.g. docs/results/relay)")
	short := fs.Bool("short", false, "CI form: 2 flows, two light steps of 300 ms, every server")
	if err := cli.ParseOnlyFlags(fs, "relay",
		"Runs one generator against keymesh's ticket relay, TLS stream relay and TURN and, in the\n"+
			"same run, against Tailscale's derper and coturn: each server pinned to its own core, the\n"+
			"generator to another, stepped offered load, and prints a Markdown table.", args); err != nil {
		return c, err
	}
	if *short {
		*flows, *rates, o.Step = "2", "500,1000", 300*time.Millisecond
	}
	for _, list := range []string{*ours, *against} {
		for _, s := range strings.Split(list, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			if !slices.Contains(AllServers, s) {
				return c, fmt.Errorf("unknown server %q: use %s", s, strings.Join(AllServers, ", "))
			}
			if !slices.Contains(o.Servers, s) {
				o.Servers = append(o.Servers, s)
			}
		}
	}
	if len(o.Servers) == 0 {
		return c, errors.New("no servers: give --servers or --against")
	}
	for _, f := range strings.Split(*flows, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 5000 || slices.Contains(o.Flows, n) {
			return c, fmt.Errorf("--flows %q: want distinct counts from 1 to 5000", *flows)
		}
		o.Flows = append(o.Flows, n)
	}
	for _, f := range strings.Split(*segments, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		// A run is one UDP datagram on the wire before the kernel cuts
		// it: at most 64 segments and 64 KiB with the frame overhead.
		if err != nil || n < 1 || n > 64 || n*(o.Size+100) > 65000 || slices.Contains(o.Segments, n) {
			return c, fmt.Errorf("--segments %q: want distinct runs of 1 to 64 datagrams, at most 65000 bytes of frames each", *segments)
		}
		o.Segments = append(o.Segments, n)
	}
	for _, f := range strings.Split(*rates, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || r <= 0 || (len(o.Rates) > 0 && r <= o.Rates[len(o.Rates)-1]) {
			return c, fmt.Errorf("--rates %q: want ascending packets per second", *rates)
		}
		o.Rates = append(o.Rates, r)
	}
	switch {
	case o.Size < 16 || o.Size > 1200:
		return c, fmt.Errorf("--size %d: want 16 to 1200 bytes", o.Size)
	case o.Step < 100*time.Millisecond:
		return c, fmt.Errorf("--step %v: want at least 100ms", o.Step)
	case o.Batch < 1 || o.Batch > 1024 || o.Receivers < 1:
		return c, errors.New("--batch (1-1024) and --receivers must be at least 1")
	case o.Repeat < 1 || o.Repeat > 20:
		return c, fmt.Errorf("--repeat %d: use 1 to 20", o.Repeat)
	case o.ServerCore == o.GenCore || o.ServerCore < 0 || o.GenCore < 0 || max(o.ServerCore, o.GenCore) >= runtime.NumCPU():
		return c, fmt.Errorf("--server-core %d, --generator-core %d: want two different cores of this machine's %d", o.ServerCore, o.GenCore, runtime.NumCPU())
	}
	return c, nil
}

// Main is `loadtest relay`.
func Main(ctx context.Context, args []string) error {
	c, err := parseRelayCompare(args, os.Stderr)
	if err != nil {
		return err
	}
	md, data, err := relayCompare(ctx, c, os.Stderr)
	if err != nil {
		return err
	}
	fmt.Print(md)
	if c.record != "" {
		return results.Write(c.record, append([]string{"relay"}, args...), data, md)
	}
	return nil
}

// relayCompareData is what --record keeps.
type relayCompareData struct {
	Options Options `json:"options"`
	Rows    []Row   `json:"rows"`
	Sweeps  []Sweep `json:"sweeps"`
}

// relayCompare builds the binaries (or takes --bin), runs every sweep and
// returns the table and the data.
func relayCompare(ctx context.Context, c relayCompareConfig, log io.Writer) (string, relayCompareData, error) {
	o := c.opts
	cli.RaiseFileLimit()
	if c.bin != "" {
		o.Bins = Binaries{Relay: c.bin + "/relay", Derper: c.bin + "/derper", Derpgen: c.bin + "/derpgen"}
	} else {
		dir, err := os.MkdirTemp("", "loadtest-relay-bin-")
		if err != nil {
			return "", relayCompareData{}, err
		}
		defer os.RemoveAll(dir)
		fmt.Fprintln(log, "relay: building the servers...")
		if o.Bins, err = Build(ctx, dir, o.Servers); err != nil {
			return "", relayCompareData{}, err
		}
	}
	sweeps, err := Run(ctx, o, log)
	if err != nil {
		return "", relayCompareData{}, err
	}
	rows := Summarize(o, sweeps)
	o.Bins = Binaries{}
	return Markdown(o, rows), relayCompareData{Options: o, Rows: rows, Sweeps: sweeps}, nil
}
