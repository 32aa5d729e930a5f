// Package throughput is `loadtest throughput`: session throughput direct and
// relayed on loopback, side by side with raw UDP.
package throughput

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keymesh/keymesh/internal/flagenv"
	"github.com/keymesh/keymesh/loadtest/results"
)

// tpOpts are the flags of `loadtest throughput`.
type tpOpts struct {
	bytes   int64
	runs    int
	only    []string
	timeout time.Duration
	pipe    bool   // --pipe: `peer pipe` between real processes, direct against relayed
	bin     string // --pipe: directory of prebuilt binaries
	record  string // --record: results prefix
}

// tpScenario is one way of moving bytes between two endpoints on loopback.
type tpScenario struct {
	name string
	note string
	run  func(ctx context.Context, n int64) (tpResult, error)
}

// tpResult is one run's outcome.
type tpResult struct {
	bytes   int64         // delivered
	elapsed time.Duration // first byte sent to last byte received
	cpu     time.Duration // process CPU time (user+system) during the run
	sent    int64         // raw UDP: bytes offered
}

func (r tpResult) mbps() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.bytes) / r.elapsed.Seconds() / 1e6
}

func tpScenarios() []tpScenario {
	return []tpScenario{
		{"raw-udp", "1200-byte datagrams, blasted, receiver counts", tpRawUDP},
		{"quic-udpconn", "quic-go over *net.UDPConn (GSO, PMTUD)", tpQUICUDP(false)},
		{"quic-udpconn-1343", "quic-go over *net.UDPConn, packet size fixed as the path layer's", tpQUICUDP(true)},
		{"keymesh-direct", "node stream, path layer, direct path", tpNode(false)},
		{"keymesh-relay", "node stream, path layer, through the ticket relay", tpNode(true)},
	}
}

// parseBytes reads a size like 200MB, 1GiB, 5000000.
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToUpper(s))
	units := []struct {
		suffix string
		mult   int64
	}{{"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with an optional unit (KB, MB, GB, KiB, MiB, GiB)", s)
	}
	return int64(v * float64(mult)), nil
}

func parseThroughputFlags(args []string, stderr io.Writer) (tpOpts, error) {
	var o tpOpts
	fs := flag.NewFlagSet("loadtest throughput", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = flagenv.Usage(fs)
	size := fs.String("bytes", "200MB", "bytes to move per run and scenario (e.g. 200MB, 1GiB)")
	fs.IntVar(&o.runs, "runs", 1, "runs per scenario; the table shows the median")
	only := fs.String("only", "", "comma-separated scenarios to run (default all: "+strings.Join(tpNames(), ", ")+")")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "deadline of each run")
	fs.BoolVar(&o.pipe, "pipe", false, "instead of the in-process scenarios, time `peer pipe` between real rendezvous, relay and peer daemon processes, direct against relayed (--no-direct) in alternating rounds, and print their ratio")
	fs.StringVar(&o.record, "record", "", "also write the data and the table to <prefix>.json and <prefix>.md (package loadtest/results), e.g. docs/results/throughput")
	fs.StringVar(&o.bin, "bin", "", "with --pipe: directory holding prebuilt rendezvous, relay and peer binaries (default: build them)")
	if err := flagenv.Parse(fs, args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if o.bytes, err = parseBytes(*size); err != nil {
		return o, fmt.Errorf("--bytes: %w", err)
	}
	if o.runs < 1 {
		return o, errors.New("--runs must be at least 1")
	}
	if o.pipe && *only != "" {
		return o, errPipeFlags
	}
	if *only != "" {
		for _, name := range strings.Split(*only, ",") {
			name = strings.TrimSpace(name)
			if !slices.Contains(tpNames(), name) {
				return o, fmt.Errorf("--only: unknown scenario %q (want some of %s)", name, strings.Join(tpNames(), ", "))
			}
			o.only = append(o.only, name)
		}
	}
	return o, nil
}

func tpNames() []string {
	var out []string
	for _, s := range tpScenarios() {
		out = append(out, s.name)
	}
	return out
}

// Main moves --bytes over each scenario on loopback, in this one
// process, and prints MB/s side by side with raw UDP as a Markdown table.
func Main(ctx context.Context, args []string) error {
	o, err := parseThroughputFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	if o.pipe {
		rep, md, err := throughputPipe(ctx, o, os.Stdout, os.Stderr)
		if err != nil || o.record == "" {
			return err
		}
		return results.Write(o.record, append([]string{"throughput"}, args...), rep, md)
	}
	rows, md, err := throughput(ctx, o, os.Stdout, os.Stderr)
	if err != nil || o.record == "" {
		return err
	}
	return results.Write(o.record, append([]string{"throughput"}, args...), rows, md)
}

// tpRow is one scenario's median run, as --record keeps it.
type tpRow struct {
	Scenario  string  `json:"scenario"`
	What      string  `json:"what"`
	Bytes     int64   `json:"bytes"`
	Sent      int64   `json:"sent,omitempty"`
	Seconds   float64 `json:"seconds"`
	MBps      float64 `json:"mb_per_s"`
	VsRaw     float64 `json:"vs_raw_udp,omitempty"`
	CPUPerGiB float64 `json:"cpu_s_per_gib"`
}

// throughput runs the in-process scenarios and prints their table on out;
// it returns the rows and the Markdown it printed.
func throughput(ctx context.Context, o tpOpts, out, progress io.Writer) ([]tpRow, string, error) {
	type row struct {
		sc  tpScenario
		res tpResult
	}
	var rows []row
	for _, sc := range tpScenarios() {
		if len(o.only) > 0 && !slices.Contains(o.only, sc.name) {
			continue
		}
		var results []tpResult
		for i := 0; i < o.runs; i++ {
			rctx, cancel := context.WithTimeout(ctx, o.timeout)
			before := tpCPUTime()
			res, err := sc.run(rctx, o.bytes)
			res.cpu = tpCPUTime() - before
			cancel()
			if err != nil {
				return nil, "", fmt.Errorf("%s: %w", sc.name, err)
			}
			fmt.Fprintf(progress, "%s run %d: %.1f MB/s (%d bytes in %v)\n", sc.name, i+1, res.mbps(), res.bytes, res.elapsed.Round(time.Millisecond))
			results = append(results, res)
		}
		slices.SortFunc(results, func(a, b tpResult) int {
			switch {
			case a.mbps() < b.mbps():
				return -1
			case a.mbps() > b.mbps():
				return 1
			}
			return 0
		})
		rows = append(rows, row{sc, results[len(results)/2]})
	}
	var raw float64
	for _, r := range rows {
		if r.sc.name == "raw-udp" {
			raw = r.res.mbps()
		}
	}
	var md strings.Builder
	var recs []tpRow
	fmt.Fprintf(&md, "Throughput on loopback, %s per run, median of %d run(s):\n\n", tpSize(o.bytes), o.runs)
	fmt.Fprintln(&md, "| scenario | what | delivered | time | MB/s | vs raw UDP | CPU s/GiB |")
	fmt.Fprintln(&md, "| --- | --- | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rows {
		rec := tpRow{Scenario: r.sc.name, What: r.sc.note, Bytes: r.res.bytes, Sent: r.res.sent,
			Seconds: r.res.elapsed.Seconds(), MBps: r.res.mbps()}
		ratio := "-"
		if raw > 0 {
			rec.VsRaw = r.res.mbps() / raw
			ratio = fmt.Sprintf("%.2f", rec.VsRaw)
		}
		delivered := tpSize(r.res.bytes)
		if r.res.sent > 0 && r.res.sent != r.res.bytes {
			delivered += fmt.Sprintf(" (%.1f%% lost)", 100*float64(r.res.sent-r.res.bytes)/float64(r.res.sent))
		}
		cpu := "-"
		if r.res.bytes > 0 {
			rec.CPUPerGiB = r.res.cpu.Seconds() / (float64(r.res.bytes) / (1 << 30))
			cpu = fmt.Sprintf("%.1f", rec.CPUPerGiB)
		}
		fmt.Fprintf(&md, "| %s | %s | %s | %.2f s | %.1f | %s | %s |\n", r.sc.name, r.sc.note, delivered,
			r.res.elapsed.Seconds(), r.res.mbps(), ratio, cpu)
		recs = append(recs, rec)
	}
	fmt.Fprintf(out, "\n%s", md.String())
	return recs, md.String(), nil
}

func tpSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d B", n)
}
