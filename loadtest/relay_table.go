package main

import (
	"fmt"
	"io"
	"time"
)

// printRelayTable prints the results as a Markdown table: for each
// allocation count a row per server and, when both ran, their ratio.
func printRelayTable(w io.Writer, o relayOpts, results []relayResult) {
	transport := "UDP"
	if o.tcp {
		transport = "TCP"
	}
	fmt.Fprintf(w, "\nTURN relay load: turnutils_uclient over %s, %d-byte messages, one channel per allocation to turnutils_peer (echo, %d processes), %d UDP sockets for ours.\n",
		transport, o.size, o.peers, o.sockets)
	fmt.Fprintf(w, "Relayed pkt/s counts messages that came back, twice (to the peer and back), in the best %s window; CPU is the server's in that window.\n"+
		"Loss is uclient's (sent but not echoed back), over the whole run. Each uclient session also leaves an idle probe allocation,\n"+
		"so the server holds twice the allocations in the first column (which counts the ones carrying traffic).\n\n", o.window)
	fmt.Fprintln(w, "| allocations | interval | server | offered pkt/s | relayed pkt/s | Mbit/s | loss | CPU (% of a core) | CPU per pkt | failed uclients |")
	fmt.Fprintln(w, "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
	byKey := map[[2]any]relayResult{}
	for _, r := range results {
		byKey[[2]any{r.allocations, r.server}] = r
		fmt.Fprintf(w, "| %d | %s | %s | %.0f | %.0f | %.1f | %.3f%% | %.0f%% | %s | %d |\n",
			r.allocations, r.interval, r.server, r.offered(), r.rate(), r.mbps(), r.lossPercent(),
			r.cpuPercent(), fmtPerPacket(r.cpuPerPacket()), r.failedProcs)
		if r.server != "coturn" {
			continue
		}
		ours, ok := byKey[[2]any{r.allocations, "ours"}]
		if !ok {
			continue
		}
		fmt.Fprintf(w, "| %d | %s | **ours/coturn** | | %s | %s | %+.3f pt | %s | %s | |\n",
			r.allocations, r.interval, ratio(ours.rate(), r.rate()), ratio(ours.mbps(), r.mbps()),
			ours.lossPercent()-r.lossPercent(), ratio(ours.cpuPercent(), r.cpuPercent()),
			ratio(float64(ours.cpuPerPacket()), float64(r.cpuPerPacket())))
	}
}

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func fmtPerPacket(d time.Duration) string {
	if d == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
}
