package regionkill

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/loadtest/labrun"
	"github.com/keymesh/keymesh/loadtest/results/resultstest"
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
}

func TestRegionKillRecord(t *testing.T) {
	args := []string{"--frontdoor", "accel", "--mesh", "--kill", "r2", "--record", filepath.Join(t.TempDir(), "rk")}
	o, err := parseRegionKillFlags(args, io.Discard)
	if err != nil || o.record != args[len(args)-1] {
		t.Fatalf("parse: %+v, %v", o, err)
	}
	res := labrun.RegionKillResult{Killed: 5 * time.Second, MarkedDown: 300 * time.Millisecond, KillGap: time.Second}
	res.Transfer.Sent, res.Transfer.Received = 100, 100
	var printed strings.Builder
	if err := reportRegionKill(&printed, args, o, res); err != nil {
		t.Fatal(err)
	}
	var data regionKillRecord
	md := resultstest.Read(t, o.record, append([]string{"regionkill"}, args...), &data)
	if md != printed.String() || !strings.Contains(md, "| accel | 2 |") {
		t.Errorf("recorded Markdown %q, printed %q", md, printed.String())
	}
	if data.Result.MarkedDown != res.MarkedDown || !data.Mesh {
		t.Errorf("recorded data %+v", data)
	}
}
