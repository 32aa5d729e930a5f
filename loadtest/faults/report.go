package faults

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Goals are the recovery targets a fault's row is checked against
// (issue 12): no byte lost, the longest stall within Stall (UDPStall
// where UDP is blocked and the TCP stream relay takes over, which must
// bring the data back before UDP returns), the best
// path back within BestBack, a new session within NewSession after a
// server restart.
type Goals struct {
	Stall, UDPStall, BestBack, NewSession time.Duration
}

// DefaultGoals are issue 12's targets.
var DefaultGoals = Goals{Stall: time.Second, UDPStall: 2 * time.Second, BestBack: 2 * time.Second, NewSession: time.Second}

// Row sums up the runs of one fault. Times are in milliseconds; the
// worst run is what counts against the goals.
type Row struct {
	Fault string `json:"fault"`
	Runs  int    `json:"runs"`
	// Intact is how many runs delivered every byte with the same SHA-256;
	// Failed how many could not complete (Errors says why).
	Intact int `json:"intact"`
	Failed int `json:"failed"`
	// StallMs are the median and worst longest stall; DataBackMs the
	// worst time until data flowed again; BestBackMs the worst time until
	// the best path was back (nil: some run never got it back);
	// NewSessionMs the worst time until a new session after a restart.
	StallP50Ms   float64  `json:"stall_p50_ms"`
	StallMaxMs   float64  `json:"stall_max_ms"`
	DataBackMs   float64  `json:"data_back_max_ms"`
	BestBackMs   *float64 `json:"best_back_max_ms"`
	NewSessionMs *float64 `json:"new_session_max_ms,omitempty"`
	// Held, for a cut, is how many runs got their data back while the
	// cut still held (for udp-block, through the stream relay).
	Held *int `json:"data_back_while_cut,omitempty"`
	// Met says whether every run met the goals.
	Met    bool     `json:"met"`
	Errors []string `json:"errors,omitempty"`
}

// Report is the summary of a `loadtest faults` run.
type Report struct {
	Rate  int64    `json:"rate_bytes_per_s"`
	Size  int64    `json:"size_bytes"`
	Goals Goals    `json:"-"`
	Rows  []Row    `json:"rows"`
	Runs  []Result `json:"runs"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Summarize folds results into one row per fault, in order of first
// appearance, checked against g.
func Summarize(results []Result, g Goals, rate, size int64) Report {
	rep := Report{Rate: rate, Size: size, Goals: g, Runs: results}
	var order []string
	by := map[string][]Result{}
	for _, r := range results {
		if _, ok := by[r.Fault]; !ok {
			order = append(order, r.Fault)
		}
		by[r.Fault] = append(by[r.Fault], r)
	}
	for _, name := range order {
		rs := by[name]
		row := Row{Fault: name, Runs: len(rs), Met: true}
		stallGoal := g.Stall
		if name == string(UDPBlock) {
			stallGoal = g.UDPStall
		}
		var stalls []float64
		var best float64
		bestMissing := false
		for _, r := range rs {
			if r.Err != "" {
				row.Failed++
				row.Met = false
				first, _, _ := strings.Cut(r.Err, "\n")
				if !slices.Contains(row.Errors, first) {
					row.Errors = append(row.Errors, first)
				}
			}
			if r.Intact {
				row.Intact++
			} else {
				row.Met = false
			}
			stalls = append(stalls, ms(r.Stall))
			row.DataBackMs = max(row.DataBackMs, ms(r.DataBack))
			if r.Lifted != nil {
				if row.Held == nil {
					row.Held = new(int)
				}
				if r.DataBack < *r.Lifted {
					*row.Held++
				} else if name == string(UDPBlock) {
					row.Met = false // the data waited for UDP
				}
			}
			if r.Stall > stallGoal {
				row.Met = false
			}
			if r.BestBack == nil {
				bestMissing = true
				row.Met = false
			} else {
				best = max(best, ms(*r.BestBack))
				if *r.BestBack > g.BestBack {
					row.Met = false
				}
			}
			if f, err := Parse(r.Fault); (err == nil && len(f) == 1 && f[0].newSession()) || r.NewSession != nil {
				v := -1.0
				if r.NewSession != nil {
					v = ms(*r.NewSession)
				}
				if v < 0 || time.Duration(v*float64(time.Millisecond)) > g.NewSession {
					row.Met = false
				}
				if row.NewSessionMs == nil || v < 0 || (*row.NewSessionMs >= 0 && v > *row.NewSessionMs) {
					row.NewSessionMs = &v
				}
			}
		}
		slices.Sort(stalls)
		row.StallP50Ms = stalls[(len(stalls)-1)/2]
		row.StallMaxMs = stalls[len(stalls)-1]
		if !bestMissing {
			row.BestBackMs = &best
		}
		rep.Rows = append(rep.Rows, row)
	}
	return rep
}

// Failures lists the faults whose runs missed a goal.
func (r Report) Failures() []string {
	var out []string
	for _, row := range r.Rows {
		if !row.Met {
			out = append(out, row.Fault)
		}
	}
	return out
}

// Markdown writes the table a person reads.
func (r Report) Markdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Paced stream %.1f MiB/s, %d MiB per run; goals: no loss, stall <= %s (%s with UDP blocked), best path back <= %s, new session <= %s.\n\n",
		float64(r.Rate)/(1<<20), r.Size>>20, r.Goals.Stall, r.Goals.UDPStall, r.Goals.BestBack, r.Goals.NewSession)
	b.WriteString("| fault | runs | intact | longest stall p50 / max (ms) | data back max (ms) | best path back max (ms) | new session max (ms) | met |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, row := range r.Rows {
		met := "yes"
		if !row.Met {
			met = "**no**"
		}
		best := "never"
		if row.BestBackMs != nil {
			best = fmt.Sprintf("%.0f", *row.BestBackMs)
		}
		ns := "-"
		if row.NewSessionMs != nil {
			ns = "never"
			if *row.NewSessionMs >= 0 {
				ns = fmt.Sprintf("%.0f", *row.NewSessionMs)
			}
		}
		fmt.Fprintf(&b, "| %s | %d | %d/%d | %.0f / %.0f | %.0f | %s | %s | %s |\n",
			row.Fault, row.Runs, row.Intact, row.Runs, row.StallP50Ms, row.StallMaxMs, row.DataBackMs, best, ns, met)
	}
	for _, row := range r.Rows {
		if row.Fault == string(UDPBlock) && row.Held != nil {
			fmt.Fprintf(&b, "\nudp-block: data back while UDP was still blocked (through the TCP stream relay) in %d of %d runs.\n", *row.Held, row.Runs)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// JSON writes faults.json: the rows and every run.
func (r Report) JSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteAll writes faults.md and faults.json into dir.
func (r Report) WriteAll(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range []struct {
		name  string
		write func(io.Writer) error
	}{{"faults.md", r.Markdown}, {"faults.json", r.JSON}} {
		fh, err := os.Create(filepath.Join(dir, f.name))
		if err != nil {
			return err
		}
		werr := f.write(fh)
		if err := fh.Close(); werr == nil {
			werr = err
		}
		if werr != nil {
			return fmt.Errorf("write %s: %w", f.name, werr)
		}
	}
	return nil
}
