package turn

import (
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/keymesh/keymesh/loadtest/cli"
)

// relaySummary is one table row: the medians of a server's runs at one
// allocation count.
type relaySummary struct {
	server       string
	allocations  int
	interval     time.Duration
	runs         int
	offered      float64
	rate, mbps   float64
	loss         float64 // percent
	cpuPercent   float64
	cpuPerPacket time.Duration
	failedProcs  int // over all runs
}

// summarize groups runs by allocation count and server, in first-seen
// order, taking the median of each figure.
func summarize(results []relayResult) []relaySummary {
	type key struct {
		n      int
		server string
	}
	var (
		order  []key
		groups = map[key][]relayResult{}
	)
	for _, r := range results {
		k := key{r.allocations, r.server}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	out := make([]relaySummary, 0, len(order))
	for _, k := range order {
		g := groups[k]
		s := relaySummary{server: k.server, allocations: k.n, interval: g[0].interval, runs: len(g), offered: g[0].offered()}
		s.rate = median(g, func(r relayResult) float64 { return r.rate() })
		s.mbps = median(g, func(r relayResult) float64 { return r.mbps() })
		s.loss = median(g, func(r relayResult) float64 { return r.lossPercent() })
		s.cpuPercent = median(g, func(r relayResult) float64 { return r.cpuPercent() })
		s.cpuPerPacket = time.Duration(median(g, func(r relayResult) float64 { return float64(r.cpuPerPacket()) }))
		for _, r := range g {
			s.failedProcs += r.failedProcs
		}
		out = append(out, s)
	}
	return out
}

// median of f over rs (the mean of the middle two for an even count).
func median(rs []relayResult, f func(relayResult) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// printRelayTable prints the rows as a Markdown table: for each allocation
// count a row per server and, when both ran, their ratio.
func printRelayTable(w io.Writer, o relayOpts, rows []relaySummary) {
	transport := "UDP"
	if o.tcp {
		transport = "TCP"
	}
	fmt.Fprintf(w, "\nTURN relay load: turnutils_uclient over %s, %d-byte messages, one channel per allocation to turnutils_peer (echo, %d processes), %d UDP sockets for ours.\n",
		transport, o.size, o.peers, o.sockets)
	fmt.Fprintf(w, "Relayed pkt/s counts messages that came back, twice (to the peer and back), in the best %s window; CPU is the server's in that window.\n"+
		"Loss is uclient's (sent but not echoed back), over the whole run. Each uclient session also leaves an idle probe allocation,\n"+
		"so the server holds twice the allocations in the first column (which counts the ones carrying traffic).\n", o.window)
	if o.repeat > 1 {
		fmt.Fprintf(w, "Each figure is the median of %d runs per server, the servers taking turns.\n", o.repeat)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| allocations | interval | server | offered pkt/s | relayed pkt/s | Mbit/s | loss | CPU (% of a core) | CPU per pkt | failed uclients |")
	fmt.Fprintln(w, "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
	ours := map[int]relaySummary{}
	for _, r := range rows {
		fmt.Fprintf(w, "| %d | %s | %s | %.0f | %.0f | %.1f | %.3f%% | %.0f%% | %s | %d |\n",
			r.allocations, r.interval, r.server, r.offered, r.rate, r.mbps, r.loss,
			r.cpuPercent, fmtPerPacket(r.cpuPerPacket), r.failedProcs)
		if r.server == "ours" {
			ours[r.allocations] = r
			continue
		}
		o, ok := ours[r.allocations]
		if !ok {
			continue
		}
		fmt.Fprintf(w, "| %d | %s | **ours/coturn** | | %s | %s | %+.3f pt | %s | %s | |\n",
			r.allocations, r.interval, cli.Ratio(o.rate, r.rate), cli.Ratio(o.mbps, r.mbps),
			o.loss-r.loss, cli.Ratio(o.cpuPercent, r.cpuPercent),
			cli.Ratio(float64(o.cpuPerPacket), float64(r.cpuPerPacket)))
	}
}

func fmtPerPacket(d time.Duration) string {
	if d == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
}
