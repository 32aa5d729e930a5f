package turn

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/coturn"
	"github.com/keymesh/keymesh/internal/testutil/debpkg"
)

// TestRelayShort runs `loadtest turn --short`: our relay and coturn's
// turnserver under the same small uclient load, and the table.
func TestRelayShort(t *testing.T) {
	for _, prog := range []string{coturn.ClientProgram, coturn.PeerProgram, coturn.ServerProgram} {
		debpkg.Require(t, prog, coturn.Package)
	}
	o, err := parseRelayFlags([]string{"--short"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out, log bytes.Buffer
	results, err := relayBench(ctx, o, &out, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Logf("\n%s", out.String())
	if len(results) != 2 {
		t.Fatalf("%d rows, want ours and coturn", len(results))
	}
	loss := map[string]int64{}
	for _, r := range results {
		want := int64(r.allocations * r.messages)
		if r.failedProcs != 0 || r.sent != want || r.received == 0 {
			t.Errorf("%s: sent %d of %d, received %d, %d failed uclients", r.server, r.sent, want, r.received, r.failedProcs)
		}
		if r.rate() <= 0 || r.runCPU < 0 {
			t.Errorf("%s: rate %.0f pkt/s, CPU %v over the run: nothing measured", r.server, r.rate(), r.runCPU)
		}
		// Our relay's CPU comes from getrusage (nanoseconds) and must show;
		// coturn's from /proc/<pid>/stat, in 10 ms ticks, which the short
		// form's few hundred packets may not reach (seen: 0 s at 56 pkt/s).
		if r.server == "ours" && r.runCPU <= 0 {
			t.Errorf("ours: CPU %v over the run: nothing measured", r.runCPU)
		}
		loss[r.server] = r.lost
	}
	if loss["ours"] > loss["coturn"]+1 {
		t.Errorf("our relay lost %d messages, coturn %d", loss["ours"], loss["coturn"])
	}
	for _, s := range []string{"| ours |", "| coturn |", "**ours/coturn**"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("table lacks %q", s)
		}
	}
}

func TestParseRelayFlags(t *testing.T) {
	o, err := parseRelayFlags([]string{"--allocations", "1,100,10000", "--servers", "both", "--max-rate", "20000"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.allocations) != 3 || o.allocations[2] != 10000 || len(o.servers) != 2 {
		t.Fatalf("parsed %+v", o)
	}
	if iv := rowInterval(o, 10000); iv != 500*time.Millisecond {
		t.Fatalf("10000 allocations capped at 20000/s: interval %v, want 500ms", iv)
	}
	if iv := rowInterval(o, 100); iv != 20*time.Millisecond {
		t.Fatalf("100 allocations under the cap: interval %v, want 20ms", iv)
	}
	for _, bad := range [][]string{
		{"--allocations", "0"}, {"--allocations", "x"}, {"--servers", "nginx"},
		{"--size", "9000"}, {"--interval", "100us"}, {"--per-process", "0"}, {"extra"},
	} {
		if _, err := parseRelayFlags(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error spans lines: %q", bad, err)
		}
	}
}

func TestBestWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	// 100/s, then 300/s from 2 s to 5 s, then 100/s again.
	pts := []progressPoint{
		{at(0), 0}, {at(1), 100}, {at(2), 200}, {at(3), 500}, {at(4), 800}, {at(5), 1100}, {at(6), 1200}, {at(7), 1300},
	}
	from, to, n, ok := bestWindow(pts, 3*time.Second)
	if !ok || !from.Equal(at(2)) || !to.Equal(at(5)) || n != 900 {
		t.Fatalf("window %v..%v, %d packets, ok=%v; want 2s..5s, 900", from.Sub(t0), to.Sub(t0), n, ok)
	}
	if _, _, _, ok := bestWindow(pts[:2], 3*time.Second); ok {
		t.Fatal("window longer than the series accepted")
	}
}

func TestSummarizeMedians(t *testing.T) {
	mk := func(server string, lost int64, failed int) relayResult {
		return relayResult{server: server, allocations: 10, interval: 20 * time.Millisecond, sent: 1000, lost: lost, failedProcs: failed}
	}
	rows := summarize([]relayResult{mk("ours", 10, 0), mk("coturn", 0, 0), mk("ours", 50, 1), mk("coturn", 2, 0), mk("ours", 20, 0), mk("coturn", 4, 0)})
	if len(rows) != 2 || rows[0].server != "ours" || rows[1].server != "coturn" {
		t.Fatalf("rows %+v", rows)
	}
	if rows[0].loss != 2 || rows[1].loss != 0.2 || rows[0].runs != 3 || rows[0].failedProcs != 1 {
		t.Fatalf("medians: ours %+v, coturn %+v", rows[0], rows[1])
	}
	var buf bytes.Buffer
	printRelayTable(&buf, relayOpts{repeat: 3, size: 1000, peers: 2, sockets: 4, window: time.Second}, rows)
	if !strings.Contains(buf.String(), "| 10 | 20ms | **ours/coturn** |") || !strings.Contains(buf.String(), "median of 3 runs") {
		t.Fatalf("table:\n%s", buf.String())
	}
}

func TestCPUAt(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := []cpuSample{{t0, time.Second}, {t0.Add(time.Second), 2 * time.Second}}
	if got := cpuAt(s, t0.Add(500*time.Millisecond)); got != 1500*time.Millisecond {
		t.Fatalf("midpoint %v, want 1.5s", got)
	}
	if got := cpuAt(s, t0.Add(-time.Second)); got != time.Second {
		t.Fatalf("before first %v", got)
	}
	if got := cpuAt(s, t0.Add(time.Hour)); got != 2*time.Second {
		t.Fatalf("after last %v", got)
	}
}
