package attack

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/loadtest/results/resultstest"
)

func TestAttackFlags(t *testing.T) {
	o, err := parseAttackFlags([]string{"--short", "--only", "x25519, stun-reflect", "--rate", "50kpps",
		"--rendezvous-arg=--rate-limit=-1", "--max-rss", "100"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Duration != 2500*time.Millisecond || o.cfg.Rate != (Rate{Packets: 50000}) ||
		strings.Join(o.cfg.Attacks, ",") != "x25519,stun-reflect" || o.cfg.Thresholds.MaxRSS != 100<<20 ||
		len(o.cfg.RendezvousArgs) != 1 || o.cfg.RendezvousArgs[0] != "--rate-limit=-1" {
		t.Errorf("parsed %+v", o.cfg)
	}
	for _, c := range []struct{ args, want string }{
		{"--only nope", "unknown attack"},
		{"--rate fast", "--rate"},
		{"--duration 10ms", "--duration"},
		{"--min-success 2", "--min-success"},
		{"--peers 1", "--peers"},
		{"extra", "unexpected argument"},
	} {
		_, err := parseAttackFlags(strings.Fields(c.args), io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line mentioning %q", c.args, err, c.want)
		}
	}
}

func TestAttackRecord(t *testing.T) {
	args := []string{"--short", "--only", "x25519", "--record", filepath.Join(t.TempDir(), "attack")}
	o, err := parseAttackFlags(args, io.Discard)
	if err != nil || o.record != args[len(args)-1] {
		t.Fatalf("parse: %+v, %v", o, err)
	}
	rep := &Report{Rate: "100Mbit", Duration: 2500 * time.Millisecond, LegitRate: 20, CPUs: 2,
		Results: []Result{{Attack: "x25519", Summary: "spoofed first contacts"}}}
	var table strings.Builder
	if err := rep.Markdown(&table); err != nil {
		t.Fatal(err)
	}
	if err := recordAttack(o, args, rep, table.String()); err != nil {
		t.Fatal(err)
	}
	var data Report
	md := resultstest.Read(t, o.record, append([]string{"attack"}, args...), &data)
	if md != strings.TrimSpace(table.String())+"\n" || !strings.Contains(md, "| x25519 |") {
		t.Errorf("recorded Markdown %q, printed %q", md, table.String())
	}
	if len(data.Results) != 1 || data.Results[0].Attack != "x25519" {
		t.Errorf("recorded data %+v", data)
	}
}
