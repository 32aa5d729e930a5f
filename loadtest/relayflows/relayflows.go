// Package relayflows is `loadtest relayflows`: the ticket relay's forwarding
// at 1, 100 and 10,000 flows against raw UDP (the same generator sending the
// same flows straight to the recipients).
package relayflows

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

// relayFlowsConfig is the relayflows command line.
type relayFlowsConfig struct {
	flows        []int
	rate         float64 // packets/s offered in total; 0: as fast as the generator goes
	size         int     // payload bytes (what the recipient's QUIC would get)
	duration     time.Duration
	relaySockets int
	senders      int // most sender sockets
	sinks        int // most recipient sockets
	generators   int
	batch        int
	buffer       int
	out          string
	cpuprofile   string
}

// Main measures the ticket relay's forwarding against raw UDP: the
// same generator sends the same flows straight to the recipients (raw) and
// through the relay, and the recipients count what arrives.
func Main(ctx context.Context, args []string) error {
	cfg, err := parseRelayFlows(args)
	if err != nil {
		return err
	}
	lab, err := newFlowLab(ctx, cfg)
	if err != nil {
		return err
	}
	defer lab.close()
	if cfg.cpuprofile != "" {
		f, err := os.Create(cfg.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Fprintf(os.Stderr, "relayflows: relay on %s (%d SO_REUSEPORT sockets), %d-byte payloads, %v per run, offered %s\n",
		lab.relayAddr, cfg.relaySockets, cfg.size, cfg.duration, rateText(cfg.rate))
	var rows []flowRow
	for _, n := range cfg.flows {
		if err := lab.setup(ctx, n); err != nil {
			return err
		}
		raw, err := lab.measure(ctx, n, false)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "  %6d flows  raw:   %s\n", n, raw.summary())
		rel, err := lab.measure(ctx, n, true)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "  %6d flows  relay: %s\n", n, rel.summary())
		rows = append(rows, flowRow{flows: n, raw: raw, relay: rel})
	}
	table := flowTable(cfg, rows)
	fmt.Print(table)
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(table), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", cfg.out, err)
		}
	}
	return nil
}

func parseRelayFlows(args []string) (relayFlowsConfig, error) {
	var c relayFlowsConfig
	fs := flag.NewFlagSet("relayflows", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	flows := fs.String("flows", "1,100,10000", "comma-separated flow counts; a flow is a (sender socket, recipient ticket) pair")
	fs.Float64Var(&c.rate, "rate", 100000, "packets per second offered in total (0: as fast as the generator can)")
	fs.IntVar(&c.size, "size", 1200, "payload bytes per packet")
	fs.DurationVar(&c.duration, "duration", 5*time.Second, "length of each run")
	fs.IntVar(&c.relaySockets, "relay-sockets", runtime.NumCPU(), "SO_REUSEPORT sockets the relay serves")
	fs.IntVar(&c.senders, "senders", 1000, "most sender sockets (flows share them beyond this)")
	fs.IntVar(&c.sinks, "sinks", 64, "most recipient sockets (each binds many tickets beyond this)")
	fs.IntVar(&c.generators, "generators", 1, "generator goroutines")
	fs.IntVar(&c.batch, "batch", 32, "datagrams per sendmmsg of the generator")
	fs.IntVar(&c.buffer, "buffer", 4<<20, "SO_RCVBUF/SO_SNDBUF of every socket, bytes (the kernel caps it at net.core.rmem_max)")
	fs.StringVar(&c.out, "out", "", "also write the Markdown table to this file")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of the whole run (generator, relay and sinks) to this file")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fs.SetOutput(os.Stderr)
			fs.PrintDefaults()
		}
		return c, err
	}
	for _, f := range strings.Split(*flows, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 100000 {
			return c, fmt.Errorf("--flows %q: want counts from 1 to 100000, e.g. 1,100,10000", *flows)
		}
		c.flows = append(c.flows, n)
	}
	switch {
	case c.rate < 0:
		return c, fmt.Errorf("--rate %v: want packets per second, or 0 for as fast as possible", c.rate)
	case c.size < 16 || c.size > 1350:
		return c, fmt.Errorf("--size %d: want 16 to 1350 bytes (the relay frame adds %d and must stay within 1500)", c.size, relayOverhead)
	case c.duration < 100*time.Millisecond:
		return c, fmt.Errorf("--duration %v: want at least 100ms", c.duration)
	case c.relaySockets < 1 || c.senders < 1 || c.sinks < 1 || c.generators < 1 || c.batch < 1:
		return c, fmt.Errorf("--relay-sockets, --senders, --sinks, --generators and --batch must be at least 1")
	}
	return c, nil
}

func rateText(r float64) string {
	if r == 0 {
		return "as fast as possible"
	}
	return fmt.Sprintf("%.0f pps", r)
}
