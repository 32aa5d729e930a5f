package main

import (
	"io"
	"strings"
	"testing"

	"github.com/keymesh/keymesh/internal/natlab"
)

func TestRegionFlags(t *testing.T) {
	o, err := parseRegionKillFlags([]string{"--frontdoor", "bgp", "--b-type", "symmetric", "--regions", "3"}, io.Discard)
	if err != nil || o.door != natlab.BGP || o.cfg.BType != natlab.Symmetric || o.regions != 3 {
		t.Fatalf("parse: %+v, %v", o, err)
	}
	for _, args := range [][]string{
		{"--frontdoor", "ga"}, {"--regions", "1"}, {"--a-type", "same-nat"},
		{"--kill-after", "30s"}, {"--rate", "0"}, {"--health-interval", "1ms"},
	} {
		if _, err := parseRegionKillFlags(args, io.Discard); err == nil || !strings.HasPrefix(err.Error(), "--") {
			t.Errorf("regionkill %q: error %v, want one naming the flag", args, err)
		}
	}
	m, err := parseMatrixFlags([]string{"--regions", "2", "--frontdoor", "bgp", "--relay-args", "--x {addr}"}, io.Discard)
	if err != nil || m.regions != 2 || m.door != natlab.BGP || m.relArgs != "--x {addr}" {
		t.Fatalf("matrix parse: %+v, %v", m, err)
	}
	for _, args := range [][]string{{"--regions", "4"}, {"--frontdoor", "x"}, {"--relay-args", "--x"}} {
		if _, err := parseMatrixFlags(args, io.Discard); err == nil || !strings.HasPrefix(err.Error(), "--") {
			t.Errorf("matrix %q: error %v, want one naming the flag", args, err)
		}
	}
}
