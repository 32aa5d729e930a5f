package labrun

import (
	"context"
	"fmt"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/keymesh/keymesh/internal/rendezvous"
	"github.com/keymesh/keymesh/internal/wire"
	"github.com/keymesh/keymesh/loadtest/matrix"
)

// NATPair is a pair of NAT behaviours as the rendezvous's traversal metrics
// label them: the connecting side's (local_nat) and the other's.
type NATPair struct{ Local, Remote string }

// OutcomeCounts are sessions by how they ended.
type OutcomeCounts struct{ Direct, Relay, Failed int }

// NATLabel is the NAT behaviour a peer in a lab site of type t measures
// and reports (the rendezvous's local_nat and remote_nat labels): the
// lab's types differ in filtering, the reports only in mapping.
func NATLabel(t string) string {
	switch t {
	case matrix.Public:
		return rendezvous.NATLabel(wire.NATNone)
	case matrix.FullCone, matrix.PortRestricted, matrix.Double, matrix.SameNAT:
		return rendezvous.NATLabel(wire.NATEndpointIndep)
	case matrix.Symmetric:
		return rendezvous.NATLabel(wire.NATAddrPortDepend)
	case matrix.UDPBlocked:
		return rendezvous.NATLabel(wire.NATUDPBlocked)
	}
	return rendezvous.NATLabel(wire.NATUnknown)
}

// MatrixByNAT folds a matrix report (matrix.json) into counts per NAT
// pair, as the rendezvous's metrics count sessions.
func MatrixByNAT(rep matrix.Report) map[NATPair]OutcomeCounts {
	out := map[NATPair]OutcomeCounts{}
	for _, p := range rep.Pairs {
		k := NATPair{NATLabel(p.A), NATLabel(p.B)}
		c := out[k]
		c.Direct += p.Direct
		c.Relay += p.Relay
		c.Failed += p.Failed
		out[k] = c
	}
	return out
}

// ParseOutcomes reads the sessions of keymesh_traversal_outcomes_total in
// a rendezvous's /metrics text, as their initiators reported them (each
// session is reported by both peers), per NAT pair.
func ParseOutcomes(text string) (map[NATPair]OutcomeCounts, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("labrun: rendezvous metrics: %w", err)
	}
	out := map[NATPair]OutcomeCounts{}
	mf := mfs["keymesh_traversal_outcomes_total"]
	if mf == nil {
		return out, nil
	}
	for _, m := range mf.Metric {
		l := map[string]string{}
		for _, lp := range m.Label {
			l[lp.GetName()] = lp.GetValue()
		}
		if l["side"] != "initiator" {
			continue
		}
		k := NATPair{l["local_nat"], l["remote_nat"]}
		c := out[k]
		n := int(m.GetCounter().GetValue())
		switch l["result"] {
		case "direct":
			c.Direct += n
		case "relay_udp", "relay_stream":
			c.Relay += n
		default:
			c.Failed += n
		}
		out[k] = c
	}
	return out, nil
}

// Outcomes returns the sessions the lab's rendezvous counted from outcome
// reports, per NAT pair (see ParseOutcomes).
func (l *Lab) Outcomes(ctx context.Context) (map[NATPair]OutcomeCounts, error) {
	text, err := l.Metrics(ctx, "rendezvous")
	if err != nil {
		return nil, err
	}
	return ParseOutcomes(text)
}
