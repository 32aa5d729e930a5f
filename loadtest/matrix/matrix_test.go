package matrix

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExpected(t *testing.T) {
	cases := []struct {
		a, b string
		want Outcome
	}{
		{Public, Public, Direct},
		{PortRestricted, PortRestricted, Direct},
		{PortRestricted, Symmetric, Direct},
		{Symmetric, Double, Direct},
		{Symmetric, FullCone, Direct},
		{Symmetric, Symmetric, Relay},
		{UDPBlocked, Public, Relay},
		{Public, UDPBlocked, Relay},
		{SameNAT, SameNAT, Direct},
	}
	for _, c := range cases {
		if got := Expected(c.a, c.b); got != c.want {
			t.Errorf("Expected(%s, %s) = %s, want %s", c.a, c.b, got, c.want)
		}
	}
}

func TestSummarizeAndMet(t *testing.T) {
	trials := []Trial{
		{A: Symmetric, B: Symmetric, Outcome: Relay, FirstByte: 20 * time.Millisecond},
		{A: Public, B: Public, Outcome: Direct, FirstByte: 10 * time.Millisecond, ToDirect: 200 * time.Millisecond},
		{A: Public, B: Public, Outcome: Relay, FirstByte: 30 * time.Millisecond},
		{A: UDPBlocked, B: Public, Outcome: None},
	}
	r := Summarize(trials)
	if len(r.Pairs) != 3 || r.Pairs[0].A != Public {
		t.Fatalf("pairs %+v", r.Pairs)
	}
	pp := r.Pairs[0]
	if pp.Trials != 2 || pp.Direct != 1 || pp.Relay != 1 || pp.Met() || *pp.FirstByteMsP50 != 20 || *pp.DirectMsP50 != 200 {
		t.Fatalf("public pair %+v", pp)
	}
	if f := r.Failures(); len(f) != 2 {
		t.Fatalf("failures %v", f)
	}
}

func TestOutputs(t *testing.T) {
	var trials []Trial
	for _, a := range PairTypes {
		for _, b := range PairTypes {
			trials = append(trials, Trial{A: a, B: b, Outcome: Expected(a, b), FirstByte: time.Millisecond, ToDirect: time.Millisecond})
		}
	}
	trials = append(trials, Trial{A: SameNAT, B: SameNAT, Outcome: Direct})
	r := Summarize(trials)
	if f := r.Failures(); len(f) != 0 {
		t.Fatalf("failures: %v", f)
	}
	dir := t.TempDir()
	if err := r.WriteAll(dir); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "matrix.json"))
	var shape struct {
		Pairs []map[string]any `json:"pairs"`
	}
	if err := json.Unmarshal(b, &shape); err != nil || len(shape.Pairs) != 37 {
		t.Fatalf("json: %v, %d pairs", err, len(shape.Pairs))
	}
	for _, k := range []string{"a", "b", "trials", "direct", "relay", "failed", "expected", "first_byte_ms_p50", "direct_ms_p50"} {
		if _, ok := shape.Pairs[0][k]; !ok {
			t.Errorf("matrix.json pair lacks %q", k)
		}
	}
	svg, _ := os.ReadFile(filepath.Join(dir, "matrix.svg"))
	if !bytes.Contains(svg, []byte("<svg")) || !bytes.Contains(svg, []byte("same-nat")) {
		t.Fatal("svg missing or without the same-nat note")
	}
	md, _ := os.ReadFile(filepath.Join(dir, "matrix.md"))
	if strings.Count(string(md), "\n") != 39 {
		t.Fatalf("markdown has %d lines", strings.Count(string(md), "\n"))
	}
}
