// Package tun is `loadtest tun`: iperf3 TCP and UDP over the keymesh TUN
// beside wireguard-go, in the netns lab (needs root).
package tun

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/bintest"
	"github.com/keymesh/keymesh/internal/testutil/debpkg"
	"github.com/keymesh/keymesh/loadtest/cli"
	"github.com/keymesh/keymesh/loadtest/results"
)

// tunOpts configures `loadtest tun`.
type tunOpts struct {
	secs    int
	stream  int64
	bin     string
	record  string
	profile string
	verbose bool
}

func parseTUNFlags(args []string, stderr io.Writer) (tunOpts, error) {
	fs := flag.NewFlagSet("loadtest tun", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o tunOpts
	fs.IntVar(&o.secs, "time", 5, "seconds each iperf3 run lasts")
	stream := fs.Int64("stream", 512, "MiB the QUIC stream run (`peer pipe`) carries")
	fs.StringVar(&o.bin, "bin", "", "`directory` holding prebuilt rendezvous, relay and peer binaries (default: go build into a temporary directory)")
	fs.StringVar(&o.record, "record", "", "write the result to `prefix`.json and prefix.md (package loadtest/results)")
	fs.StringVar(&o.profile, "profile", "", "write both daemons' CPU profiles during the TUN TCP run to `directory`/a-cpu.pprof and b-cpu.pprof (the peers run with --pprof)")
	fs.BoolVar(&o.verbose, "v", false, "log the lab's progress on stderr")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: loadtest tun [flags]\n\n"+
			"Builds the NAT lab (network namespaces, needs root) with two hosts on its public\n"+
			"segment and measures, between the same two namespaces: iperf3 TCP and UDP over the\n"+
			"keymesh TUN (`peer up --tun`, a direct path), the QUIC stream (`peer pipe`), and\n"+
			"iperf3 TCP and UDP over wireguard-go (built from golang.zx2c4.com/wireguard,\n"+
			"configured with Debian's wireguard-tools).\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.secs <= 0 || *stream <= 0 {
		return o, errors.New("--time and --stream must be positive")
	}
	o.stream = *stream << 20
	return o, nil
}

// Main is `loadtest tun`: it parses args (the flags after the name) and
// runs it.
func Main(ctx context.Context, args []string) error {
	o, err := parseTUNFlags(args, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("loadtest tun needs root: it builds network namespaces and TUN devices")
	}
	for _, p := range [][2]string{{"iperf3", "iperf3"}, {"wg", "wireguard-tools"}} {
		if _, err := debpkg.Ensure(ctx, p[0], p[1]); err != nil {
			return err
		}
	}
	bins, cleanup, err := cli.LabBinaries(ctx, o.bin)
	if err != nil {
		return err
	}
	defer cleanup()
	wg, err := buildWireguardGo(ctx)
	if err != nil {
		return err
	}
	defer os.RemoveAll(wg.dir)
	rows, err := measureTUN(ctx, o, bins, wg.path, cli.LabLogger(o.verbose))
	if err != nil {
		return err
	}
	md := tunMarkdown(rows)
	fmt.Print(md)
	if o.record != "" {
		return results.Write(o.record, os.Args[1:], rows, md)
	}
	return nil
}

// tunRow is one measured data path.
type tunRow struct {
	Path    string  `json:"path"`
	Tool    string  `json:"tool"`
	MTU     int     `json:"mtu"`
	MBps    float64 `json:"mb_per_s"`
	LossPct float64 `json:"loss_pct,omitempty"`
	// Retransmits: the TCP sender's retransmitted segments (iperf3's count).
	Retransmits int `json:"retransmits,omitempty"`
	// TunnelLost: for the keymesh TUN rows, the packets the sending
	// router carried into the session (its Sent counter) that the
	// receiving router did not write to its device (its Received counter),
	// over the run: lost between the two routers, not before them.
	TunnelLost int64  `json:"tunnel_lost,omitempty"`
	Note       string `json:"note,omitempty"`
}

func tunMarkdown(rows []tunRow) string {
	var b strings.Builder
	var wgTCP, wgUDP float64
	for _, r := range rows {
		switch r.Path {
		case "wireguard-go TCP":
			wgTCP = r.MBps
		case "wireguard-go UDP":
			wgUDP = r.MBps
		}
	}
	b.WriteString("| data path | tool | MTU | MB/s | UDP loss | TCP retransmits | lost inside the tunnel | vs wireguard-go (same protocol; TCP for the stream) |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		loss, ratio, retx, lost := "-", "-", "-", "-"
		if r.Tool == "iperf3" && !strings.HasSuffix(r.Path, "UDP") {
			retx = strconv.Itoa(r.Retransmits)
		}
		if strings.HasPrefix(r.Path, "keymesh TUN") {
			lost = strconv.FormatInt(r.TunnelLost, 10)
		}
		if strings.HasSuffix(r.Path, "UDP") {
			loss = fmt.Sprintf("%.1f%%", r.LossPct)
			if wgUDP > 0 {
				ratio = fmt.Sprintf("%.2f", r.MBps/wgUDP)
			}
		} else if wgTCP > 0 {
			ratio = fmt.Sprintf("%.2f", r.MBps/wgTCP)
		}
		mtu := "-"
		if r.MTU > 0 {
			mtu = strconv.Itoa(r.MTU)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.1f | %s | %s | %s | %s |\n", r.Path, r.Tool, mtu, r.MBps, loss, retx, lost, ratio)
	}
	return b.String()
}

// iperf3Result reads the throughput (bytes/s), the UDP loss and the TCP
// retransmits from iperf3 -J.
func iperf3Result(out []byte) (float64, float64, int, error) {
	var j struct {
		End struct {
			SumSent *struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived *struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			Sum *struct {
				BitsPerSecond float64 `json:"bits_per_second"`
				LostPercent   float64 `json:"lost_percent"`
			} `json:"sum"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &j); err != nil {
		return 0, 0, 0, fmt.Errorf("iperf3 output: %w", err)
	}
	if j.Error != "" {
		return 0, 0, 0, fmt.Errorf("iperf3: %s", j.Error)
	}
	var loss float64
	if j.End.Sum != nil {
		loss = j.End.Sum.LostPercent
	}
	var retx int
	if j.End.SumSent != nil {
		retx = j.End.SumSent.Retransmits
	}
	switch {
	case j.End.SumReceived != nil:
		return j.End.SumReceived.BitsPerSecond / 8, loss, retx, nil
	case j.End.Sum != nil:
		return j.End.Sum.BitsPerSecond / 8, loss, retx, nil
	}
	return 0, 0, 0, errors.New("iperf3 output has no end.sum")
}

// wgBinary is a wireguard-go built into a temporary directory.
type wgBinary struct{ dir, path string }

func buildWireguardGo(ctx context.Context) (wgBinary, error) {
	dir, err := os.MkdirTemp("", "keymesh-wg-")
	if err != nil {
		return wgBinary{}, err
	}
	path := dir + "/wireguard-go"
	fmt.Fprintln(os.Stderr, "building wireguard-go...")
	if err := bintest.BuildPackage(ctx, path, "golang.zx2c4.com/wireguard"); err != nil {
		os.RemoveAll(dir)
		return wgBinary{}, err
	}
	return wgBinary{dir: dir, path: path}, nil
}

var errTimeout = errors.New("timed out")

// waitFor polls cond every 100 ms until it holds or d passes.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return errTimeout
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}
