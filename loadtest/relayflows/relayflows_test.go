package relayflows

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestRelayFlowsSmoke runs the relay-flows measurement briefly at a low rate
// and checks that both paths deliver nearly everything.
func TestRelayFlowsSmoke(t *testing.T) {
	cfg, err := parseRelayFlows([]string{"--flows", "1,5", "--rate", "2000", "--duration", "300ms", "--senders", "3", "--sinks", "2"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lab, err := newFlowLab(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer lab.close()
	var rows []flowRow
	for _, n := range cfg.flows {
		if err := lab.setup(ctx, n); err != nil {
			t.Fatal(err)
		}
		raw, err := lab.measure(ctx, n, false)
		if err != nil {
			t.Fatal(err)
		}
		rel, err := lab.measure(ctx, n, true)
		if err != nil {
			t.Fatal(err)
		}
		for name, r := range map[string]flowResult{"raw": raw, "relay": rel} {
			if r.sent < 300 || r.loss() > 0.05 {
				t.Errorf("%d flows %s: sent %d, received %d: want ~600 sent and under 5%% loss", n, name, r.sent, r.received)
			}
		}
		rows = append(rows, flowRow{flows: n, raw: raw, relay: rel})
	}
	table := flowTable(cfg, rows)
	if strings.Count(table, "| relay |") != 2 || strings.Count(table, "| raw |") != 2 {
		t.Fatalf("table:\n%s", table)
	}
}

func TestRelayFlowsFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--flows", "0"},
		{"--flows", "1,x"},
		{"--size", "1400"},
		{"--rate", "-1"},
		{"--duration", "1ms"},
	} {
		if _, err := parseRelayFlows(args); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
