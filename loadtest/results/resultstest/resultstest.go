// Package resultstest reads back, in a subcommand's tests, what it
// recorded with --record (package results).
package resultstest

import (
	"encoding/json"
	"testing"

	"github.com/keymesh/keymesh/loadtest/results"
)

// Read reads the record at prefix into data and returns its Markdown. It
// fails t when the record cannot be read or decoded, and marks t failed when
// the recorded command line is not that of `loadtest` with args (the
// subcommand and its flags).
func Read(t testing.TB, prefix string, args []string, data any) string {
	t.Helper()
	rec, md, err := results.Read(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if want := results.CommandLine(args); rec.Meta.Command != want {
		t.Errorf("recorded command %q, want %q", rec.Meta.Command, want)
	}
	if err := json.Unmarshal(rec.Data, data); err != nil {
		t.Fatalf("recorded data: %v", err)
	}
	return md
}
