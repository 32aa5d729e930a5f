package peers

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// table prints the result as a Markdown table.
func (r *peersResult) table(w io.Writer) {
	fmt.Fprintln(w, "| measure | value |")
	fmt.Fprintln(w, "| --- | --- |")
	for _, kv := range r.rows() {
		fmt.Fprintf(w, "| %s | %s |\n", kv[0], kv[1])
	}
	if r.note != "" {
		fmt.Fprintf(w, "\n%s\n", r.note)
	}
}

// compareTable prints several results side by side, one column each.
func compareTable(w io.Writer, results []*peersResult) {
	var keys []string
	cells := map[string][]string{}
	var notes []string
	for i, r := range results {
		for _, kv := range r.rows() {
			if _, ok := cells[kv[0]]; !ok {
				keys = append(keys, kv[0])
				cells[kv[0]] = make([]string, len(results))
			}
			cells[kv[0]][i] = kv[1]
		}
		if r.note != "" && !slices.Contains(notes, r.note) {
			notes = append(notes, r.note)
		}
	}
	fmt.Fprint(w, "| measure |")
	for _, r := range results {
		label := scenario{r.opts.registry, max(1, r.opts.instances)}.label()
		if r.spawned {
			label = r.opts.registry + " registry, rendezvous process"
		}
		fmt.Fprintf(w, " %s |", label)
	}
	fmt.Fprint(w, "\n| --- |"+strings.Repeat(" --- |", len(results))+"\n")
	for _, k := range keys {
		fmt.Fprintf(w, "| %s | %s |\n", k, strings.Join(cells[k], " | "))
	}
	for _, n := range notes {
		fmt.Fprintf(w, "\n%s\n", n)
	}
}

// rows are the result's measures as (name, value) pairs.
func (r *peersResult) rows() [][2]string {
	o := r.opts
	var out [][2]string
	row := func(k, f string, a ...any) { out = append(out, [2]string{k, fmt.Sprintf(f, a...)}) }
	if r.local {
		limit := fmt.Sprintf("rate limit %v/s per source", o.rate)
		if o.rate < 0 {
			limit = "no rate limit"
		}
		row("server", "in-process, %d instance(s), %s registry, %s", max(1, o.instances), o.registry, limit)
	} else if r.spawned {
		row("server", "rendezvous process (--rendezvous), %s registry", o.registry)
	} else {
		row("server", "%d external: %s", len(o.servers), strings.Join(o.servers, ", "))
	}
	if o.perSource > 1 {
		row("peers", "%d (%d per UDP socket and loopback address)", o.count, o.perSource)
	} else {
		row("peers", "%d (one UDP socket and loopback address each)", o.count)
	}
	registered := o.count - r.regMissed
	row("registration phase", "%d registered in %v, %d missed (%d in flight)", registered, r.regTime.Round(time.Millisecond), r.regMissed, o.inflight)
	row("registrations/s (first: Register, Challenge, Register, Registered)", "%.0f", float64(registered)/r.regTime.Seconds())
	row("datagrams sent per registration (2 without loss)", "%.2f", float64(r.regSent)/float64(max(1, registered)))
	c := r.connects
	if o.duration <= 0 {
		row("steady phase", "skipped (--duration 0)")
	} else {
		secs := c.elapsed.Seconds()
		row("steady phase", "%v, %d connect workers", c.elapsed.Round(time.Millisecond), o.workers)
		row("connects/s", "%.0f (%d ok)", float64(c.ok)/secs, c.ok)
		row("connect latency p50 / p99 / max", "%v / %v / %v", percentile(c.latencies, 0.5).Round(time.Microsecond),
			percentile(c.latencies, 0.99).Round(time.Microsecond), percentile(c.latencies, 1).Round(time.Microsecond))
		row("punches received", "%d (%.1f%% of connects)", r.punches, 100*float64(r.punches)/float64(max(1, c.ok)))
		row("refreshes in steady phase", "%d (%.0f/s)", r.steadyRegs, float64(r.steadyRegs)/secs)
		errs := fmt.Sprintf("not found %d, no answer %d, other %d", c.notFound, c.noAnswer, c.other)
		if c.firstErr != nil {
			errs += fmt.Sprintf(" (first: %v)", c.firstErr)
		}
		row("connect errors", "%s", errs)
	}
	row("datagrams sent / received by peers", "%d / %d", r.sent, r.recv)
	if len(r.rejected) == 0 {
		row("server rejected", "none")
	} else {
		var keys []string
		for k := range r.rejected {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, r.rejected[k]))
		}
		row("server rejected", "%s", strings.Join(parts, ", "))
	}
	if len(o.admins) > 0 {
		row("server registered peers (gauge) / RSS, after the steady phase", "%.0f / %.0f MiB", r.peersGauge, r.rssAfter/(1<<20))
	}
	if r.heapPerPeer >= 0 {
		row("server heap per registered peer", "%.0f B", r.heapPerPeer)
	}
	if r.rssPerPeer >= 0 {
		row("server RSS per registered peer", "%.0f B", r.rssPerPeer)
	}
	if r.redisPerPeer >= 0 {
		row("Redis used_memory per peer", "%.0f B", r.redisPerPeer)
	}
	if len(r.instNames) > 1 {
		var parts []string
		for i, n := range r.instNames {
			parts = append(parts, fmt.Sprintf("%s %.0f / %.0f", n, r.instRegs[i], r.instConnects[i]))
		}
		row("registrations / connects served per instance", "%s", strings.Join(parts, ", "))
	}
	return out
}

// peersScenario is one scenario's figures in a --record file: the table's
// rows as printed and the figures the bar is about.
type peersScenario struct {
	Registry        string            `json:"registry"`
	Peers           int               `json:"peers"`
	PerSource       int               `json:"per_source"`
	Registered      int               `json:"registered"`
	RegisterSeconds float64           `json:"register_seconds"`
	Connects        int               `json:"connects_ok"`
	ConnectErrors   int               `json:"connect_errors"`
	ConnectP50Ms    float64           `json:"connect_p50_ms"`
	ConnectP99Ms    float64           `json:"connect_p99_ms"`
	Refreshes       int64             `json:"refreshes_in_steady_phase"`
	ServerRSSBytes  float64           `json:"server_rss_bytes,omitempty"`
	ServerPeers     float64           `json:"server_registered_peers_gauge,omitempty"`
	Rows            map[string]string `json:"rows"`
}

// peersData is what --record keeps of the results.
func peersData(results []*peersResult) []peersScenario {
	var out []peersScenario
	for _, r := range results {
		c := r.connects
		sc := peersScenario{
			Registry: r.opts.registry, Peers: r.opts.count, PerSource: max(1, r.opts.perSource),
			Registered: r.opts.count - r.regMissed, RegisterSeconds: r.regTime.Seconds(),
			Connects: c.ok, ConnectErrors: c.notFound + c.noAnswer + c.other,
			ConnectP50Ms: ms(percentile(c.latencies, 0.5)), ConnectP99Ms: ms(percentile(c.latencies, 0.99)),
			Refreshes: r.steadyRegs, ServerRSSBytes: r.rssAfter, ServerPeers: r.peersGauge,
			Rows: map[string]string{},
		}
		for _, kv := range r.rows() {
			sc.Rows[kv[0]] = kv[1]
		}
		out = append(out, sc)
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
