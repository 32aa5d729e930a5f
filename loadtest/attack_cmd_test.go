package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/loadtest/attack"
)

func TestAttackFlags(t *testing.T) {
	o, err := parseAttackFlags([]string{"--short", "--only", "x25519, stun-reflect", "--rate", "50kpps",
		"--rendezvous-arg=--rate-limit=-1", "--max-rss", "100"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Duration != 2500*time.Millisecond || o.cfg.Rate != (attack.Rate{Packets: 50000}) ||
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
