package peercmd

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/policy"
	"github.com/keymesh/keymesh/node"
)

// startNode starts the node `peer up` serves; it returns once registered.
// The registry holds the node's metrics (the policy's refusal counter).
func startNode(ctx context.Context, o upOptions) (daemon.Node, *node.Node, *prometheus.Registry, error) {
	ctx, cancel := context.WithTimeout(ctx, o.RegisterTimeout)
	defer cancel()
	n, err := node.New(ctx, node.Config{
		Seed:        o.Seed,
		Server:      o.Server,
		ListenAddr:  o.Listen,
		AllowAny:    o.AllowAny,
		Allow:       o.Allow,
		NoDirect:    o.NoDirect,
		NoReports:   o.NoReports,
		JoinToken:   o.JoinToken,
		StreamRelay: o.StreamRelay,
		Reflection:  o.Reflection,
		Logger:      o.Logger,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	reg := prometheus.NewRegistry()
	pol := n.Policy()
	for _, kind := range policy.Kinds {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "keymesh_peer_policy_refused_total",
			Help:        "Flows the allow policy (--allow) refused, by kind: session (a peer no rule names), tcp (streams and TCP flows to a port no rule allows), udp.",
			ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 { return float64(pol.Refused(kind)) }))
	}
	return daemon.FromNode(n), n, reg, nil
}
