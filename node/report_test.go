package node

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/rendezvous"
)

// outcomeCount reads keymesh_traversal_outcomes_total{side,result} summed
// over NAT pairs (on loopback both sides have no NAT: "none").
func outcomeCount(t *testing.T, reg *prometheus.Registry, side, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "keymesh_traversal_outcomes_total" {
			continue
		}
		for _, m := range mf.Metric {
			l := map[string]string{}
			for _, lp := range m.Label {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["side"] == side && l["result"] == result {
				if l["local_nat"] != "none" || l["remote_nat"] != "none" {
					t.Errorf("loopback peers reported NATs %s/%s, want none/none", l["local_nat"], l["remote_nat"])
				}
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestOutcomeReports: both peers of a session report it to the
// rendezvous, the initiator as such, once it went direct; a relayed
// session is reported when the nodes close; nodes with NoReports send
// nothing.
func TestOutcomeReports(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := startMeshWith(t, func(c *rendezvous.Config) { c.Registerer = reg })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	a, b := m.newNode(nil), m.newNode(nil)
	waitFor(t, 10*time.Second, "a direct path from a to b", func() bool {
		r, err := a.Ping(ctx, b.ID())
		return err == nil && r.Path == "direct"
	})
	waitFor(t, 5*time.Second, "both sides' direct reports", func() bool {
		return outcomeCount(t, reg, "initiator", "direct") == 1 && outcomeCount(t, reg, "responder", "direct") == 1
	})
	// More pings over the settled session report nothing more.
	for range 3 {
		if _, err := a.Ping(ctx, b.ID()); err != nil {
			t.Fatal(err)
		}
	}

	// A session whose direct path is cut stays relayed; closing the nodes
	// reports it.
	c, d := m.newNode(nil), m.newNode(nil)
	c.cut.Store(true)
	d.cut.Store(true)
	if r, err := c.Ping(ctx, d.ID()); err != nil || r.Path != "relay" {
		t.Fatalf("ping over a cut direct path: %+v, %v; want the relay", r, err)
	}
	c.Close()
	d.Close()
	waitFor(t, 5*time.Second, "both sides' relay reports", func() bool {
		return outcomeCount(t, reg, "initiator", "relay_udp") == 1 && outcomeCount(t, reg, "responder", "relay_udp") == 1
	})

	e, f := m.newNode(func(c *Config) { c.NoReports = true }), m.newNode(func(c *Config) { c.NoReports = true })
	if _, err := e.Ping(ctx, f.ID()); err != nil {
		t.Fatal(err)
	}
	e.Close()
	f.Close()
	a.Close()
	b.Close()
	// Reports travel over loopback UDP: give stray ones time to land
	// before the counts are checked (a count that moved fails).
	time.Sleep(300 * time.Millisecond)
	if i, r := outcomeCount(t, reg, "initiator", "direct")+outcomeCount(t, reg, "initiator", "relay_udp"), outcomeCount(t, reg, "responder", "direct")+outcomeCount(t, reg, "responder", "relay_udp"); i != 2 || r != 2 {
		t.Errorf("after sessions of nodes with NoReports: %v initiator and %v responder reports, want 2 and 2", i, r)
	}
}
