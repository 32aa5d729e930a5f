package relayflows

import (
	"fmt"
	"runtime"
	"strings"
	"time"
)

// flowResult is one run: one path at one flow count.
type flowResult struct {
	sent, received uint64
	elapsed        time.Duration
	size           int
	cpu            time.Duration // process CPU time (generator, relay and sinks)
	rcvbufErrors   uint64        // kernel drops for full receive buffers, all sockets
	relayDrops     uint64        // datagrams the relay dropped (any reason)
}

func (r flowResult) pps(n uint64) float64 { return float64(n) / r.elapsed.Seconds() }

func (r flowResult) mbps() float64 {
	return float64(r.received) * float64(r.size) * 8 / r.elapsed.Seconds() / 1e6
}

func (r flowResult) loss() float64 {
	if r.sent == 0 {
		return 0
	}
	return 1 - float64(r.received)/float64(r.sent)
}

func (r flowResult) cpuPerPacket() float64 {
	if r.received == 0 {
		return 0
	}
	return float64(r.cpu.Microseconds()) / float64(r.received)
}

func (r flowResult) summary() string {
	return fmt.Sprintf("sent %.0f pps, delivered %.0f pps (%.0f Mbit/s), loss %.2f%%, cpu %.1fs",
		r.pps(r.sent), r.pps(r.received), r.mbps(), 100*r.loss(), r.cpu.Seconds())
}

type flowRow struct {
	flows      int
	raw, relay flowResult
}

// flowTable renders the runs as a Markdown table.
func flowTable(cfg relayFlowsConfig, rows []flowRow) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nTicket relay vs raw UDP on loopback: %d-byte payloads, offered %s, %v per run, relay on %d SO_REUSEPORT sockets, "+
		"%d generator goroutine(s); generator, relay and recipients share this machine's %d cores.\n\n",
		cfg.size, rateText(cfg.rate), cfg.duration, cfg.relaySockets, cfg.generators, runtime.NumCPU())
	b.WriteString("| flows | path | sent pps | delivered pps | Mbit/s (payload) | loss | CPU µs/pkt | kernel rcvbuf drops | relay drops | relay/raw delivered |\n")
	b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		line := func(path string, x flowResult, ratio string) {
			drops := "-"
			if path == "relay" {
				drops = fmt.Sprint(x.relayDrops)
			}
			fmt.Fprintf(&b, "| %d | %s | %.0f | %.0f | %.0f | %.2f%% | %.1f | %d | %s | %s |\n",
				r.flows, path, x.pps(x.sent), x.pps(x.received), x.mbps(), 100*x.loss(), x.cpuPerPacket(), x.rcvbufErrors, drops, ratio)
		}
		ratio := "-"
		if r.raw.received > 0 {
			ratio = fmt.Sprintf("%.2f", r.relay.pps(r.relay.received)/r.raw.pps(r.raw.received))
		}
		line("raw", r.raw, "")
		line("relay", r.relay, ratio)
	}
	return b.String()
}
