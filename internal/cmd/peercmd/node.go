package peercmd

import (
	"context"

	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/node"
)

// startNode starts the node `peer up` serves; it returns once registered.
func startNode(ctx context.Context, o upOptions) (daemon.Node, *node.Node, error) {
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
		Logger:      o.Logger,
	})
	if err != nil {
		return nil, nil, err
	}
	return daemon.FromNode(n), n, nil
}
