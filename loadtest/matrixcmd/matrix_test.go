package matrixcmd

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/loadtest/matrix"
	"github.com/keymesh/keymesh/loadtest/results/resultstest"
)

func TestMatrixFlags(t *testing.T) {
	m, err := parseMatrixFlags([]string{"--regions", "2", "--frontdoor", "bgp", "--relay-args", "--x {addr}"}, io.Discard)
	if err != nil || m.regions != 2 || m.door != natlab.BGP || m.relArgs != "--x {addr}" {
		t.Fatalf("matrix parse: %+v, %v", m, err)
	}
	if m, err := parseMatrixFlags([]string{"--regions", "2", "--mesh", "--mesh-registry"}, io.Discard); err != nil || !m.mesh || !m.meshRegistry {
		t.Fatalf("matrix --mesh --mesh-registry: %+v, %v", m, err)
	}
	for _, args := range [][]string{{"--regions", "4"}, {"--frontdoor", "x"}, {"--relay-args", "--x"}, {"--regions", "2", "--mesh-registry"}} {
		if _, err := parseMatrixFlags(args, io.Discard); err == nil || !strings.HasPrefix(err.Error(), "--") {
			t.Errorf("matrix %q: error %v, want one naming the flag", args, err)
		}
	}
}

func TestMatrixRecord(t *testing.T) {
	args := []string{"--regions", "2", "--frontdoor", "bgp", "--quick", "--record", filepath.Join(t.TempDir(), "m")}
	o, err := parseMatrixFlags(args, io.Discard)
	if err != nil || o.record != args[len(args)-1] {
		t.Fatalf("parse: %+v, %v", o, err)
	}
	rep := matrix.Summarize([]matrix.Trial{{A: "public", B: "public", Outcome: matrix.Direct, FirstByte: 7 * time.Millisecond}})
	var table strings.Builder
	if err := rep.Markdown(&table); err != nil {
		t.Fatal(err)
	}
	if err := recordMatrix(o, args, rep, table.String()); err != nil {
		t.Fatal(err)
	}
	var data matrix.Report
	md := resultstest.Read(t, o.record, append([]string{"matrix"}, args...), &data)
	if md != table.String() || !strings.Contains(md, "| public | public | direct |") {
		t.Errorf("recorded Markdown %q, printed %q", md, table.String())
	}
	if len(data.Pairs) != 1 || data.Pairs[0].Direct != 1 {
		t.Errorf("recorded data %+v", data)
	}
}
