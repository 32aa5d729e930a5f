package results

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteReadRoundTrip(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "sub", "faults")
	args := []string{"faults", "--runs", "5", "--record", "docs/results/faults"}
	data := map[string]int{"runs": 5}
	if err := Write(prefix, args, data, "| a |\n| - |\n| 1 |\n\n"); err != nil {
		t.Fatal(err)
	}
	rec, md, err := Read(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if want := "go run ./loadtest faults --runs 5 --record docs/results/faults"; rec.Meta.Command != want {
		t.Fatalf("command %q, want %q", rec.Meta.Command, want)
	}
	if md != "| a |\n| - |\n| 1 |\n" {
		t.Fatalf("markdown %q", md)
	}
	var back map[string]int
	if err := json.Unmarshal(rec.Data, &back); err != nil || back["runs"] != 5 {
		t.Fatalf("data %s (%v)", rec.Data, err)
	}
	if rec.Meta.Cores < 1 || rec.Meta.CPUModel == "" || rec.Meta.Date.IsZero() || rec.Meta.Commit == "" {
		t.Fatalf("meta incomplete: %+v", rec.Meta)
	}
}

func TestWriteRefusesEmptyPrefix(t *testing.T) {
	if err := Write("", nil, 1, ""); err != ErrNoPrefix {
		t.Fatalf("got %v, want ErrNoPrefix", err)
	}
}

func TestCommandLineQuotes(t *testing.T) {
	got := CommandLine([]string{"matrix", "--types", "full cone,symmetric", "--x", "it's", ""})
	want := `go run ./loadtest matrix --types 'full cone,symmetric' --x 'it'\''s' ''`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if strings.Contains(CommandLine([]string{"a=b:c/d"}), "'") {
		t.Fatal("safe characters quoted")
	}
}
