package usage

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"testing"
)

func TestFailPrintsOneLineAndExitStatus(t *testing.T) {
	var b bytes.Buffer
	err := fmt.Errorf("loading: %w", Errorf("--key-file %s: %w", "k", fs.ErrNotExist))
	if got := Fail(&b, "relay", err); got != ExitUsage {
		t.Fatalf("Fail returned %d, want %d", got, ExitUsage)
	}
	if want := "relay: loading: --key-file k: file does not exist (see `relay --help`)\n"; b.String() != want {
		t.Fatalf("printed %q, want %q", b.String(), want)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("the usage error does not wrap its cause")
	}
	b.Reset()
	if got := Fail(&b, "peer up", errors.New("two\nlines")); got != ExitFailure || b.String() != "peer up: two lines\n" {
		t.Fatalf("Fail = %d, %q; want %d, %q", got, b.String(), ExitFailure, "peer up: two lines\n")
	}
}

func TestServeRunsWithALoggerOrRefusesABadFormat(t *testing.T) {
	var b bytes.Buffer
	ran := false
	if got := Serve(&b, "relay", "json", "info", func(*slog.Logger) error { ran = true; return nil }); got != ExitOK || !ran {
		t.Fatalf("Serve = %d, ran %v; want %d, true", got, ran, ExitOK)
	}
	if got := Serve(&b, "relay", "xml", "info", func(*slog.Logger) error { t.Fatal("ran with a bad format"); return nil }); got != ExitUsage {
		t.Fatalf("Serve with a bad format = %d, want %d", got, ExitUsage)
	}
}
