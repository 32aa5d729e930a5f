package relaybench

import (
	"fmt"
	"slices"
	"strings"
)

// Row is one server at one flow count: medians over the runs, with the
// lowest and highest run.
type Row struct {
	Server string `json:"server"`
	Flows  int    `json:"flows"`
	// Segment is the table block's generator mode (datagrams per send
	// message); Reused marks a server that gets one frame per packet in
	// every mode, whose row repeats its sweeps of the first mode.
	Segment int  `json:"segment"`
	Reused  bool `json:"reused,omitempty"`
	Runs    int  `json:"runs"`
	// CleanRuns counts the runs with a clean step at all.
	CleanRuns int    `json:"clean_runs"`
	Clean     Spread `json:"clean_pps"`         // most delivered per second in a step with <= 0.1% loss
	CPU       Spread `json:"cpu_us_per_packet"` // at the clean rate
	// CPUFirst is the CPU per packet in the first step, where every server
	// gets the same offered rate.
	CPUFirst Spread   `json:"cpu_us_per_packet_first_step"`
	P50, P99 Spread   `json:"-"`
	Goodput  Spread   `json:"goodput_at_2x_pps"` // delivered when twice the clean rate is offered
	Latency  []Spread `json:"latency_us"`        // p50, p99 at the clean rate
	// WorstLoss is the most a step lost while the server's core stayed
	// below Unsaturated busy (the overload step included); UnsatSteps
	// counts such steps over the runs (none: WorstLoss means nothing).
	WorstLoss  Spread `json:"worst_unsaturated_loss"`
	UnsatSteps int    `json:"unsaturated_steps"`
}

// Unsaturated is the share of the server's core below which a step counts
// as unsaturated: a loss there is not for want of CPU.
const Unsaturated = 0.8

// busy is the share of the server's core in use in the step: by anything,
// when that was measured (the machine may be shared), else by the server.
func (s Step) busy() float64 {
	own := s.CPUPerPkt * s.Delivered / 1e6
	return max(own, s.CoreBusy)
}

// worstLoss is the most a step of sw lost while the server's core was
// unsaturated, and how many steps were.
func worstLoss(sw Sweep) (float64, int) {
	w, n := 0.0, 0
	for _, st := range sw.Steps {
		if st.busy() < Unsaturated {
			w, n = max(w, st.Loss), n+1
		}
	}
	return w, n
}

// Spread is a median with the lowest and highest value.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func spreadOf(v []float64) Spread {
	if len(v) == 0 {
		return Spread{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Spread{Median: m, Min: s[0], Max: s[len(s)-1]}
}

// Summarize folds the sweeps into rows, in mode, flow and server order.
func Summarize(o Options, sweeps []Sweep) []Row {
	var rows []Row
	segs := o.Segments
	if len(segs) == 0 {
		segs = []int{1}
	}
	for _, seg := range segs {
		for _, n := range o.Flows {
			for _, name := range o.Servers {
				from := seg
				if !Segments(name) {
					from = segs[0]
				}
				r := summarizeRow(name, n, from, sweeps)
				if r.Runs == 0 {
					continue
				}
				r.Segment, r.Reused = seg, from != seg
				rows = append(rows, r)
			}
		}
	}
	return rows
}

// summarizeRow folds the sweeps of one server at n flows in mode seg (a
// sweep without a mode counts as 1).
func summarizeRow(name string, n, seg int, sweeps []Sweep) Row {
	r := Row{Server: name, Flows: n}
	var clean, cpu, first, p50, p99, good, worst []float64
	for _, sw := range sweeps {
		if sw.Server != name || sw.Flows != n || max(1, sw.Segment) != seg {
			continue
		}
		r.Runs++
		if wl, k := worstLoss(sw); k > 0 {
			worst = append(worst, wl)
			r.UnsatSteps += k
		}
		if len(sw.Steps) > 0 {
			first = append(first, sw.Steps[0].CPUPerPkt)
		}
		if sw.Overload >= 0 {
			good = append(good, sw.Steps[sw.Overload].Delivered)
		}
		st, ok := sw.clean()
		if !ok {
			clean = append(clean, 0)
			continue
		}
		r.CleanRuns++
		clean = append(clean, st.Delivered)
		cpu = append(cpu, st.CPUPerPkt)
		p50 = append(p50, st.P50us)
		p99 = append(p99, st.P99us)
	}
	r.Clean, r.CPU, r.P50, r.P99, r.Goodput = spreadOf(clean), spreadOf(cpu), spreadOf(p50), spreadOf(p99), spreadOf(good)
	r.CPUFirst, r.WorstLoss = spreadOf(first), spreadOf(worst)
	r.Latency = []Spread{r.P50, r.P99}
	return r
}

// Title names each server in the table.
var Title = map[string]string{
	Ticket: "keymesh ticket relay (UDP)",
	Stream: "keymesh stream relay (TLS)",
	TURN:   "keymesh TURN (UDP)",
	Derper: "Tailscale derper (TLS)",
	Coturn: "coturn (UDP)",
}

func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func kpps(v float64) string {
	if v < 10000 {
		return fmt.Sprintf("%.1fk", v/1000)
	}
	return fmt.Sprintf("%.0fk", v/1000)
}

// cell prints a median, and its range when there were several runs.
func cell(s Spread, runs int, f func(float64) string) string {
	if runs < 2 || f(s.Min) == f(s.Max) {
		return f(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", f(s.Median), f(s.Min), f(s.Max))
}

// Markdown renders the rows: one table, a block of rows per generator
// mode, a row per flow count and server.
func Markdown(o Options, rows []Row) string {
	var b strings.Builder
	runs := "one run"
	if o.Repeat > 1 {
		runs = fmt.Sprintf("medians of %d runs (lowest–highest)", o.Repeat)
	}
	fmt.Fprintf(&b, "%d-byte payloads on loopback; each server pinned to core %d, the generator and receivers to core %d; steps of %v offered at %s pps; %s.\n",
		o.Size, o.ServerCore, o.GenCore, o.Step, rateList(o.Rates), runs)
	fmt.Fprintf(&b, "Sent one at a time: up to %d datagrams per sendmmsg, each its own; in runs of N: N same-size datagrams per message with UDP_SEGMENT, as keymesh peers send. "+
		"derper and the stream relay get one frame per packet in every mode (rows marked \"as above\" repeat the first mode's sweeps). "+
		"Loss below saturation: the most a step lost while the server's core (shared with the machine's other work) was less than %.0f%% busy, median of the runs that had such a step.\n\n", o.Batch, 100*Unsaturated)
	fmt.Fprintf(&b, "| sent | flows | server | server CPU µs/pkt at %s pps | vs ticket relay | clean rate: most delivered at ≤0.1%% loss | CPU µs/pkt there | latency p50 / p99 µs there | goodput at 2× clean rate | of clean rate | loss below saturation |\n", kpps(o.Rates[0]))
	b.WriteString("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	type key struct{ seg, flows int }
	ref := map[key]float64{}
	for _, r := range rows {
		if r.Server == Ticket {
			ref[key{r.Segment, r.Flows}] = r.CPUFirst.Median
		}
	}
	for _, r := range rows {
		clean := cell(r.Clean, r.Runs, kpps)
		if r.CleanRuns == 0 {
			clean = fmt.Sprintf("< %s", kpps(o.Rates[0]))
		}
		cpu, vs, lat := "-", "-", "-"
		if r.CleanRuns > 0 {
			cpu = cell(r.CPU, r.CleanRuns, num)
			lat = fmt.Sprintf("%s / %s", num(r.P50.Median), num(r.P99.Median))
		}
		if v := ref[key{r.Segment, r.Flows}]; v > 0 {
			vs = fmt.Sprintf("%.2fx", r.CPUFirst.Median/v)
		}
		of := "-"
		if r.Clean.Median > 0 {
			of = fmt.Sprintf("%.0f%%", 100*r.Goodput.Median/r.Clean.Median)
		}
		loss := "- (none)"
		if r.UnsatSteps > 0 {
			loss = cell(r.WorstLoss, 2, pct)
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			modeName(r), r.Flows, Title[r.Server], cell(r.CPUFirst, r.Runs, num), vs, clean, cpu, lat, cell(r.Goodput, r.Runs, kpps), of, loss)
	}
	return b.String()
}

// modeName is a row's first cell: how its generator sent.
func modeName(r Row) string {
	switch {
	case r.Reused:
		return "as above"
	case r.Segment > 1:
		return fmt.Sprintf("runs of %d", r.Segment)
	}
	return "one at a time"
}

func pct(v float64) string { return fmt.Sprintf("%.2f%%", 100*v) }

func rateList(r []float64) string {
	var s []string
	for _, v := range r {
		s = append(s, kpps(v))
	}
	return strings.Join(s, ", ")
}
