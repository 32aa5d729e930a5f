package labrun

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/loadtest/matrix"
)

// TestMatrix runs the traversal matrix with one trial per pair, through the
// same code as `loadtest matrix`, three pairs at a time (each in its own
// sites), and fails for every pair that ends below its expected outcome
// (matrix.Expected), saying why it was expected and what the trial saw.
// Trials end once the expected outcome is reached (a pair expected to
// relay does not wait for a direct path), so the test takes about 1.5 min.
// KEYMESH_MATRIX_TYPES narrows the types (e.g. "public,symmetric") when
// debugging.
func TestMatrix(t *testing.T) {
	needRoot(t)
	types, err := ParseTypes(os.Getenv("KEYMESH_MATRIX_TYPES"))
	if err != nil {
		t.Fatalf("KEYMESH_MATRIX_TYPES: %v", err)
	}
	ctx := testContext(t, 5*time.Minute)
	lab := startLab(t, ctx)
	logDir := t.TempDir()
	start := time.Now()
	trials, err := lab.RunMatrix(ctx, MatrixConfig{
		Types:    types,
		Trials:   1,
		Trial:    TrialOptions{Timeout: 8 * time.Second},
		Parallel: 3,
		// Pass/fail only: a pair expected to relay stops at its first
		// reply instead of waiting the whole timeout for a direct path.
		StopAtExpected: true,
		LogDir:         logDir,
		OnTrial: func(tr matrix.Trial) {
			t.Logf("%s -> %s: %s (first reply %s, direct %s) %s", tr.A, tr.B, tr.Outcome, fmtDur(tr.FirstByte), fmtDur(tr.ToDirect), tr.Err)
		},
	})
	if err != nil {
		t.Fatalf("matrix did not run to its end after %d trials: %v", len(trials), err)
	}
	rep := matrix.Summarize(trials)
	var md strings.Builder
	_ = rep.Markdown(&md)
	t.Logf("%d trials in %s:\n%s", len(trials), time.Since(start).Round(time.Second), md.String())
	if want := len(MatrixPairs(types)); len(rep.Pairs) != want {
		t.Fatalf("%d pairs reported, want %d", len(rep.Pairs), want)
	}
	for _, tr := range trials {
		want := matrix.Expected(tr.A, tr.B)
		if tr.Outcome.AtLeast(want) {
			continue
		}
		t.Errorf("%s -> %s: expected %s (%s), got %s: %s", tr.A, tr.B, want, matrix.Why(tr.A, tr.B), tr.Outcome, tr.Err)
	}
	if t.Failed() {
		dumpTrialLogs(t, logDir)
	}
}

// dumpTrialLogs prints the tails of the logs kept for failed trials (the
// daemons' logs say why: not registered, no probe reply, ...).
func dumpTrialLogs(t *testing.T, dir string) {
	entries, _ := os.ReadDir(dir)
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	const maxDirs = 6
	for i, e := range entries {
		if i == maxDirs {
			t.Logf("(logs of %d more failed trials not shown)", len(entries)-maxDirs)
			break
		}
		files, _ := filepath.Glob(filepath.Join(dir, e.Name(), "*.log"))
		var b strings.Builder
		for _, f := range files {
			n := 25
			if strings.HasSuffix(f, "-ping.log") {
				n = 4 // one JSON line per ping: the last few say enough
			}
			fmt.Fprintf(&b, "--- %s\n%s\n", filepath.Base(f), tailFile(f, n))
		}
		t.Logf("logs of failed trial %s:\n%s", e.Name(), b.String())
	}
}
