package metricstest

import (
	"strings"
	"testing"
)

func TestSamples(t *testing.T) {
	fams, err := Parse(strings.NewReader(`# TYPE keymesh_x_total counter
keymesh_x_total{reason="a",side="b"} 3
# TYPE keymesh_up gauge
keymesh_up 1
`))
	if err != nil {
		t.Fatal(err)
	}
	s := Samples(fams)
	if s[`keymesh_x_total{reason="a",side="b"}`] != 3 || s["keymesh_up"] != 1 || len(s) != 2 {
		t.Fatalf("samples %v", s)
	}
}
