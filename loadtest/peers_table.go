package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// table prints the result as a Markdown table.
func (r *peersResult) table(w io.Writer) {
	o := r.opts
	row := func(k, f string, a ...any) { fmt.Fprintf(w, "| %s | %s |\n", k, fmt.Sprintf(f, a...)) }
	fmt.Fprintln(w, "| measure | value |")
	fmt.Fprintln(w, "| --- | --- |")
	if r.local {
		limit := fmt.Sprintf("rate limit %v/s per source", o.rate)
		if o.rate < 0 {
			limit = "no rate limit"
		}
		row("server", "in-process, %s registry, %s", o.registry, limit)
	} else {
		row("server", "%d external: %s", len(o.servers), strings.Join(o.servers, ", "))
	}
	row("peers", "%d (one UDP socket and loopback address each)", o.count)
	registered := o.count - r.regMissed
	row("registration phase", "%d registered in %v, %d missed (%d in flight)", registered, r.regTime.Round(time.Millisecond), r.regMissed, o.inflight)
	row("registrations/s", "%.0f (first registration: Register, Challenge, Register, Registered)", float64(registered)/r.regTime.Seconds())
	row("datagrams per registration", "%.2f sent (2 without loss)", float64(r.regSent)/float64(max(1, registered)))
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
	if r.heapPerPeer >= 0 {
		row("server heap per registered peer", "%.0f B", r.heapPerPeer)
	}
	if r.rssPerPeer >= 0 {
		row("server RSS per registered peer", "%.0f B", r.rssPerPeer)
	}
	if r.redisPerPeer >= 0 {
		row("Redis used_memory per peer", "%.0f B", r.redisPerPeer)
	}
	if r.note != "" {
		fmt.Fprintf(w, "\n%s\n", r.note)
	}
}
