package labrun

import (
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/keymesh/keymesh/loadtest/matrix"
)

func TestParseOutcomes(t *testing.T) {
	text := `# TYPE keymesh_traversal_outcomes_total counter
keymesh_traversal_outcomes_total{local_nat="none",remote_nat="endpoint_independent",result="direct",side="initiator"} 3
keymesh_traversal_outcomes_total{local_nat="none",remote_nat="endpoint_independent",result="direct",side="responder"} 3
keymesh_traversal_outcomes_total{local_nat="udp_blocked",remote_nat="none",result="relay_stream",side="initiator"} 2
keymesh_traversal_outcomes_total{local_nat="udp_blocked",remote_nat="none",result="relay_udp",side="initiator"} 1
keymesh_traversal_outcomes_total{local_nat="udp_blocked",remote_nat="none",result="failed",side="initiator"} 1
`
	got, err := ParseOutcomes(text)
	if err != nil {
		t.Fatal(err)
	}
	want := map[NATPair]OutcomeCounts{
		{"none", "endpoint_independent"}: {Direct: 3},
		{"udp_blocked", "none"}:          {Relay: 3, Failed: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	rep := matrix.Report{Pairs: []matrix.Pair{
		{A: matrix.FullCone, B: matrix.Symmetric, Direct: 2, Relay: 1},
		{A: matrix.PortRestricted, B: matrix.Symmetric, Direct: 1, Failed: 1},
	}}
	if got, want := MatrixByNAT(rep), map[NATPair]OutcomeCounts{{"endpoint_independent", "address_port_dependent"}: {Direct: 3, Relay: 1, Failed: 1}}; !reflect.DeepEqual(got, want) {
		t.Errorf("MatrixByNAT: got %v, want %v", got, want)
	}
}

// TestMatrixOutcomesInMetrics runs the lab matrix and then wants the lab
// rendezvous's /metrics to show, per NAT pair, the same direct and relayed
// sessions as the matrix report (matrix.json): the peers' outcome reports
// arrive, carry the NAT behaviours each side measured, and are counted
// once per session. KEYMESH_MATRIX_TYPES narrows or widens the types
// (default: one of each NAT behaviour the reports tell apart).
func TestMatrixOutcomesInMetrics(t *testing.T) {
	needRoot(t)
	spec := os.Getenv("KEYMESH_MATRIX_TYPES")
	if spec == "" {
		spec = "public,port-restricted,symmetric,udp-blocked"
	}
	types, err := ParseTypes(spec)
	if err != nil {
		t.Fatalf("KEYMESH_MATRIX_TYPES: %v", err)
	}
	ctx := testContext(t, 5*time.Minute)
	lab := startLab(t, ctx)
	trials, err := lab.RunMatrix(ctx, MatrixConfig{
		Types: types, Trials: 1, Parallel: 3, StopAtExpected: true,
		Trial: TrialOptions{Timeout: 8 * time.Second},
		OnTrial: func(tr matrix.Trial) {
			t.Logf("%s -> %s: %s %s", tr.A, tr.B, tr.Outcome, tr.Err)
		},
	})
	if err != nil {
		t.Fatalf("matrix did not run to its end after %d trials: %v", len(trials), err)
	}
	want := MatrixByNAT(matrix.Summarize(trials))
	sessions := 0
	for _, c := range want {
		sessions += c.Direct + c.Relay
	}
	if sessions == 0 {
		t.Fatalf("no trial reached its peer: nothing to compare (trials: %+v)", trials)
	}
	// The daemons report as they stop; the last reports may still be on
	// their way.
	var got map[NATPair]OutcomeCounts
	deadline := time.Now().Add(15 * time.Second)
	for {
		if got, err = lab.Outcomes(ctx); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, c := range got {
			n += c.Direct + c.Relay
		}
		if n >= sessions || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for k, w := range want {
		g := got[k]
		t.Logf("%s -> %s: matrix.json %d direct, %d relayed; /metrics %d direct, %d relayed", k.Local, k.Remote, w.Direct, w.Relay, g.Direct, g.Relay)
		if g.Direct != w.Direct || g.Relay != w.Relay {
			t.Errorf("%s -> %s: /metrics counts %d direct, %d relayed; matrix.json %d direct, %d relayed", k.Local, k.Remote, g.Direct, g.Relay, w.Direct, w.Relay)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok && g.Direct+g.Relay > 0 {
			t.Errorf("/metrics counts sessions for NAT pair %s -> %s, which the matrix did not run: %+v", k.Local, k.Remote, g)
		}
	}
}
