package relaybench

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// fakeFlows delivers everything up to capacity packets/s and loses the
// rest; the sender keeps pace up to pace packets/s.
type fakeFlows struct {
	capacity, pace float64
	offered        []float64
}

func (f *fakeFlows) step(_ context.Context, rate float64, d time.Duration) (stepResult, error) {
	f.offered = append(f.offered, rate)
	sent := min(rate, f.pace) * d.Seconds()
	got := min(sent, f.capacity*d.Seconds())
	lat := make([]uint64, histBuckets)
	lat[bucket(int64(100*time.Microsecond))] = uint64(got)
	return stepResult{target: uint64(rate * d.Seconds()), sent: uint64(sent), received: uint64(got), elapsed: d, lat: lat}, nil
}

func (f *fakeFlows) close() {}

type fakeServer struct{}

func (fakeServer) name() string                { return "fake" }
func (fakeServer) start(context.Context) error { return nil }
func (fakeServer) pid() int                    { return os.Getpid() }
func (fakeServer) stop()                       {}
func (fakeServer) open(context.Context, int, Options) (flowSet, error) {
	return nil, nil
}

func TestSweepStopsAtLossAndOverloadsTwiceTheCleanRate(t *testing.T) {
	o := Options{Rates: []float64{1000, 2000, 4000, 8000}, Step: time.Second}
	f := &fakeFlows{capacity: 3000, pace: 1e9}
	sw, err := sweep(context.Background(), fakeServer{}, f, Ticket, 10, 1, 0, o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// warm-up at 1000, steps 1000, 2000, 4000 (loses 25%: stop), then 2 x 2000.
	want := []float64{1000, 1000, 2000, 4000, 4000}
	if len(f.offered) != len(want) {
		t.Fatalf("offered %v, want %v", f.offered, want)
	}
	for i := range want {
		if f.offered[i] != want[i] {
			t.Fatalf("offered %v, want %v", f.offered, want)
		}
	}
	c, ok := sw.clean()
	if !ok || c.Delivered != 2000 || sw.Overload != len(sw.Steps)-1 || sw.Steps[sw.Overload].Delivered != 3000 {
		t.Fatalf("clean %+v (ok %v), overload %+v", c, ok, sw.Steps[sw.Overload])
	}
	if c.P50 < 90*time.Microsecond || c.P50 > 110*time.Microsecond {
		t.Errorf("p50 %v, want about 100µs", c.P50)
	}
}

func TestSweepStopsWhenTheSenderFallsBehind(t *testing.T) {
	o := Options{Rates: []float64{1000, 2000, 4000, 8000}, Step: time.Second}
	// No loss, but the sender cannot pass 2500/s (a TCP server pushing back).
	f := &fakeFlows{capacity: 1e9, pace: 2500}
	sw, err := sweep(context.Background(), fakeServer{}, f, Stream, 10, 1, 0, o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := sw.clean()
	if !ok || c.Delivered != 2500 || c.Offered != 4000 {
		t.Fatalf("clean step %+v (ok %v): want 2500/s delivered of 4000 offered", c, ok)
	}
	if got := f.offered[len(f.offered)-1]; got != 5000 {
		t.Fatalf("overload offered %v, want twice the 2500 delivered", got)
	}
}

func TestSummarizeAndMarkdown(t *testing.T) {
	o := Options{Servers: []string{Ticket, Coturn}, Flows: []int{10}, Rates: []float64{1000, 2000}, Step: time.Second, Size: 1200, Repeat: 2, GenCore: 1}
	mk := func(server string, delivered, cpu float64) Sweep {
		return Sweep{Server: server, Flows: 10, Clean: 0, Overload: 1, Steps: []Step{
			{Offered: delivered, Delivered: delivered, CPUPerPkt: cpu, P50us: 100, P99us: 900},
			{Offered: 2 * delivered, Delivered: 1.5 * delivered},
		}}
	}
	rows := Summarize(o, []Sweep{mk(Ticket, 2000, 4), mk(Coturn, 1000, 6), mk(Ticket, 2000, 6), mk(Coturn, 1000, 10)})
	if len(rows) != 2 || rows[0].CPU.Median != 5 || rows[1].CPU.Median != 8 || rows[1].CPU.Min != 6 || rows[1].CPU.Max != 10 {
		t.Fatalf("rows %+v", rows)
	}
	md := Markdown(o, rows)
	for _, want := range []string{"| 10 | coturn (UDP) | 8.00 (6.00–10.0) | 1.60x | 1.0k | 8.00 (6.00–10.0) |", "medians of 2 runs", "| 150% |"} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
}

// TestSummarizeModes asserts that each generator mode gets its block, with
// its ratio to the ticket relay of that block; that a server sent one frame
// per packet in every mode (derper) repeats its first-mode sweeps, marked;
// and that the loss column takes only unsaturated steps.
func TestSummarizeModes(t *testing.T) {
	o := Options{Servers: []string{Ticket, Derper, Coturn}, Flows: []int{10}, Segments: []int{1, 16},
		Rates: []float64{1000, 2000}, Step: time.Second, Size: 1200, Repeat: 1, GenCore: 1, Batch: 32}
	mk := func(server string, seg int, cpu float64) Sweep {
		return Sweep{Server: server, Flows: 10, Segment: seg, Clean: 0, Overload: 2, Steps: []Step{
			{Offered: 1000, Delivered: 1000, CPUPerPkt: cpu},
			// 2% lost with the core 2000 × cpu µs busy: saturated at cpu 450.
			{Offered: 2000, Delivered: 1960, Loss: 0.02, CPUPerPkt: cpu},
			{Offered: 4000, Delivered: 2000, Loss: 0.5, CPUPerPkt: 500},
		}}
	}
	rows := Summarize(o, []Sweep{mk(Ticket, 1, 4), mk(Ticket, 16, 1), mk(Derper, 1, 20), mk(Coturn, 1, 6), mk(Coturn, 16, 450)})
	if len(rows) != 6 {
		t.Fatalf("%d rows, want 3 per mode: %+v", len(rows), rows)
	}
	d := rows[4]
	if d.Server != Derper || d.Segment != 16 || !d.Reused || d.CPUFirst.Median != 20 {
		t.Fatalf("derper in the segmented block: %+v", d)
	}
	if rows[2].WorstLoss.Median != 0.02 || rows[5].WorstLoss.Median != 0 {
		t.Fatalf("loss below saturation: coturn %v at 6 µs/pkt (want 2%%), %v at 450 µs/pkt (want 0)", rows[2].WorstLoss, rows[5].WorstLoss)
	}
	md := Markdown(o, rows)
	for _, want := range []string{
		"| one at a time | 10 | coturn (UDP) | 6.00 | 1.50x |",
		"| runs of 16 | 10 | keymesh ticket relay (UDP) | 1.00 | 1.00x |",
		"| as above | 10 | Tailscale derper (TLS) | 20.0 | 20.00x |",
		"| runs of 16 | 10 | coturn (UDP) | 450 | 450.00x |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
}
