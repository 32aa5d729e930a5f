package labrun

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/bintest"
	"github.com/keymesh/keymesh/internal/testutil/ci"
)

// The binaries are built once per test binary, into a temporary directory
// (or taken from $KEYMESH_LAB_BIN when set, for quick reruns).
var built struct {
	once sync.Once
	bins bintest.Binaries
	dir  string
	err  error
	took time.Duration
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// needRoot skips a test that needs network namespaces when not root.
func needRoot(t *testing.T) {
	t.Helper()
	ci.NeedRoot(t, "the NAT lab makes network namespaces, veth pairs and iptables rules")
}

func binaries(t *testing.T) bintest.Binaries {
	t.Helper()
	built.once.Do(func() {
		start := time.Now()
		if d := os.Getenv("KEYMESH_LAB_BIN"); d != "" {
			built.bins, built.err = bintest.Prebuilt(d)
			return
		}
		built.dir, built.err = os.MkdirTemp("", "labrun-bin-")
		if built.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		built.bins, built.err = bintest.Build(ctx, built.dir)
		built.took = time.Since(start)
	})
	if built.err != nil {
		t.Fatalf("build the binaries: %v", built.err)
	}
	if built.took > 0 {
		t.Logf("built rendezvous, relay and peer in %s", built.took.Round(time.Millisecond))
		built.took = 0
	}
	return built.bins
}

// startLab starts a lab with the servers running; it is closed when the
// test ends, after printing every process's log tail if the test failed.
func startLab(t *testing.T, ctx context.Context) *Lab {
	t.Helper()
	bins := binaries(t)
	start := time.Now()
	lab, err := Start(ctx, Config{Bins: bins, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatalf("start the lab: %v", err)
	}
	t.Logf("lab %s up in %s: rendezvous %s, relay %s", lab.Net.Prefix(), time.Since(start).Round(time.Millisecond), lab.Connect, lab.RelayAddr)
	t.Cleanup(func() {
		if t.Failed() {
			var b strings.Builder
			if procs := lab.Procs(); len(procs) > 20 {
				// A matrix: its failed trials' logs are printed
				// apart; show the servers here.
				for _, p := range procs {
					if p.Name == "rendezvous" || p.Name == "relay" {
						fmt.Fprintf(&b, "=== %s %s\n%s\n", p.Name, p.LogPath, p.Tail(60))
					}
				}
			} else {
				lab.DumpLogs(&b, 60)
			}
			t.Logf("process logs (last lines):\n%s", b.String())
		}
		start := time.Now()
		if err := lab.Close(); err != nil {
			t.Errorf("close the lab: %v", err)
		}
		t.Logf("lab closed in %s", time.Since(start).Round(time.Millisecond))
	})
	return lab
}

// testContext returns a context ending at the test's deadline minus a
// margin, or after max.
func testContext(t *testing.T, max time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), max)
	t.Cleanup(cancel)
	if d, ok := t.Deadline(); ok {
		dctx, dcancel := context.WithDeadline(ctx, d.Add(-5*time.Second))
		t.Cleanup(dcancel)
		return dctx
	}
	return ctx
}

func fmtDur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprint(d.Round(time.Millisecond))
}
