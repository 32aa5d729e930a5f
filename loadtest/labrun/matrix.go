package labrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/loadtest/matrix"
)

// MatrixConfig configures RunMatrix.
type MatrixConfig struct {
	// Types are the NAT types to pair (default all of natlab.AllTypes).
	// Every ordered pair of them but same-nat is run with one site of each
	// type; same-nat, when listed, is its own scenario: two peers behind
	// one NAT.
	Types []natlab.NATType
	// Trials per pair (default 10).
	Trials int
	// Trial configures each trial (Timeout etc.).
	Trial TrialOptions
	// Parallel is how many pairs run at once, each in its own sites
	// (default 1).
	Parallel int
	// OnTrial, when set, is called after every trial (from the pair's
	// goroutine; calls may overlap when Parallel > 1).
	OnTrial func(matrix.Trial)
	// StopAtExpected ends each trial as soon as its pair's expected
	// outcome is reached (a pair expected to relay stops at the first
	// reply) instead of waiting Trial.Timeout for a direct path: for quick
	// pass/fail runs (CI), not for measurements.
	StopAtExpected bool
	// LogDir, when set, receives the logs of every trial that fell below
	// its pair's expected outcome, one directory per trial.
	LogDir string
}

// Pair is an ordered pair of NAT types: A pings B.
type Pair struct{ A, B natlab.NATType }

// MatrixPairs returns the pairs RunMatrix runs for types, in table order:
// every ordered pair of the types other than same-nat (same type twice
// included), then same-nat with itself when listed.
func MatrixPairs(types []natlab.NATType) []Pair {
	var out []Pair
	same := false
	for _, a := range types {
		if a == natlab.SameNAT {
			same = true
			continue
		}
		for _, b := range types {
			if b != natlab.SameNAT {
				out = append(out, Pair{a, b})
			}
		}
	}
	if same {
		out = append(out, Pair{natlab.SameNAT, natlab.SameNAT})
	}
	return out
}

// ParseTypes parses a comma-separated list of NAT type names ("" or "all":
// every type), without duplicates.
func ParseTypes(s string) ([]natlab.NATType, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "all" {
		return natlab.AllTypes(), nil
	}
	var out []natlab.NATType
	seen := map[natlab.NATType]bool{}
	for _, f := range strings.Split(s, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		t, err := natlab.ParseNATType(f)
		if err != nil {
			return nil, err
		}
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no NAT types in %q", s)
	}
	return out, nil
}

// RunMatrix runs the traversal matrix: for every pair of MatrixPairs, Trials
// independent trials (fresh daemons and keys, see RunTrial). Each worker
// builds and verifies its own sites as it needs them (two per type at
// most, plus a same-nat site) and reuses them for its trials. It returns
// every trial; the error is for a run that could not go on (a site that
// failed to build or verify, ctx ended), with the trials done so far.
func (l *Lab) RunMatrix(ctx context.Context, cfg MatrixConfig) ([]matrix.Trial, error) {
	if len(cfg.Types) == 0 {
		cfg.Types = natlab.AllTypes()
	}
	if cfg.Trials <= 0 {
		cfg.Trials = 10
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 1
	}
	pairs := MatrixPairs(cfg.Types)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan Pair)
	var (
		mu       sync.Mutex
		trials   []matrix.Trial
		firstErr error
		wg       sync.WaitGroup
		seq      int
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	for w := 1; w <= cfg.Parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pool := &sitePool{lab: l, worker: w, sites: map[string]*natlab.Site{}}
			for p := range jobs {
				ha, hb, err := pool.hosts(ctx, p)
				if err != nil {
					fail(err)
					continue
				}
				for i := 0; i < cfg.Trials && ctx.Err() == nil; i++ {
					mu.Lock()
					seq++
					name := fmt.Sprintf("t%d", seq)
					mu.Unlock()
					o := cfg.Trial
					o.Name = name
					if cfg.StopAtExpected {
						o.StopAt = matrix.Expected(string(p.A), string(p.B))
					}
					res := l.RunTrial(ctx, ha, hb, o)
					if ctx.Err() != nil {
						break // interrupted: not a result
					}
					t := matrix.Trial{A: string(p.A), B: string(p.B), Outcome: res.Outcome, FirstByte: res.FirstByte, ToDirect: res.ToDirect}
					if res.Err != nil {
						t.Err = oneLine(res.Err.Error(), 400)
					}
					if !res.Outcome.AtLeast(matrix.Expected(t.A, t.B)) && cfg.LogDir != "" {
						dir := filepath.Join(cfg.LogDir, fmt.Sprintf("%s_%s_%s", p.A, p.B, name))
						if err := copyLogs(dir, res.Procs); err == nil {
							if t.Err != "" {
								t.Err += "; "
							}
							t.Err += "logs in " + dir
						}
					}
					mu.Lock()
					trials = append(trials, t)
					mu.Unlock()
					if cfg.OnTrial != nil {
						cfg.OnTrial(t)
					}
				}
			}
		}()
	}
feed:
	for _, p := range pairs {
		select {
		case jobs <- p:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if firstErr != nil {
		return trials, firstErr
	}
	return trials, ctx.Err()
}

// sitePool is one worker's sites: one per (role, type), made and verified
// on first use.
type sitePool struct {
	lab    *Lab
	worker int
	sites  map[string]*natlab.Site
}

func (sp *sitePool) site(ctx context.Context, role string, t natlab.NATType) (*natlab.Site, error) {
	key := role + "-" + string(t)
	if s, ok := sp.sites[key]; ok {
		return s, nil
	}
	start := time.Now()
	s, err := sp.lab.AddSite(ctx, fmt.Sprintf("w%d%s", sp.worker, key), t)
	if err != nil {
		return nil, err
	}
	if sp.lab.Anycast != nil {
		// With regions, A's sites are nearest region 1 and B's region 2
		// (when there is one); a same-nat site is in region 1.
		region := 1
		if role == "b" && len(sp.lab.Anycast.Regions) > 1 {
			region = 2
		}
		if err := sp.lab.Home(ctx, s, region); err != nil {
			return nil, err
		}
	}
	sp.lab.cfg.Logger.Info("labrun: site ready", "site", s.Name, "type", t, "public", s.PublicAddr, "took", time.Since(start).Round(time.Millisecond))
	sp.sites[key] = s
	return s, nil
}

// hosts returns the hosts of A and B for a pair: for same-nat both hosts of
// one site, else the first host of a role-A site and of a role-B site.
func (sp *sitePool) hosts(ctx context.Context, p Pair) (*natlab.Host, *natlab.Host, error) {
	if p.A == natlab.SameNAT || p.B == natlab.SameNAT {
		s, err := sp.site(ctx, "s", natlab.SameNAT)
		if err != nil {
			return nil, nil, err
		}
		return s.Hosts[0], s.Hosts[1], nil
	}
	sa, err := sp.site(ctx, "a", p.A)
	if err != nil {
		return nil, nil, err
	}
	sb, err := sp.site(ctx, "b", p.B)
	if err != nil {
		return nil, nil, err
	}
	return sa.Host(), sb.Host(), nil
}

// copyLogs copies the processes' log files into dir.
func copyLogs(dir string, procs []*Proc) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var errs []error
	for _, p := range procs {
		errs = append(errs, copyFile(filepath.Join(dir, filepath.Base(p.LogPath)), p.LogPath))
	}
	return errors.Join(errs...)
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// oneLine puts a multi-line message on one line (lines joined by " | ",
// runs of space collapsed) of at most max bytes.
func oneLine(s string, max int) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			parts = append(parts, l)
		}
	}
	s = strings.Join(parts, " | ")
	if len(s) > max {
		s = s[:max-3] + "..."
	}
	return s
}
