package meshreg

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/redis/go-redis/v9"

	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/mesh"
)

// Join connects to the Redis at url (discovery.ParseRedisURL's forms),
// joins group with this instance's advertised mesh address addr, runs one
// round and hands its view to apply, then keeps the membership in the
// background until ctx ends (calling apply with each changed view) and
// releases the claim. A first round that fails is logged, not returned:
// the instance serves without a number until Redis answers.
func Join(ctx context.Context, url, group string, addr netip.AddrPort, log *slog.Logger, apply func(View)) error {
	opts, err := discovery.ParseRedisURL(url)
	if err != nil {
		return err
	}
	opts.ContextTimeoutEnabled = true
	client := redis.NewUniversalClient(opts)
	m, err := New(Config{Client: client, Group: group, Addr: addr, Logger: log})
	if err != nil {
		client.Close()
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, m.Interval())
	v, err := m.Step(sctx)
	cancel()
	if err != nil {
		log.Warn("mesh membership: first round failed; retrying", "group", group, "err", err)
	}
	apply(v)
	go func() {
		defer client.Close()
		m.run(ctx, v, false, apply)
	}()
	return nil
}

// Apply returns the view handler of a mesh node: the members get its
// heartbeats and are the sources it accepts (with those it was configured
// with), and dir, when not nil, gets the number and the peers.
func Apply(n *mesh.Node, dir *mesh.Directory, log *slog.Logger) func(View) {
	return func(v View) {
		addrs := v.Addrs()
		ips := make([]netip.Addr, len(addrs))
		for i, a := range addrs {
			ips[i] = a.Addr()
		}
		n.SetAllow(ips)
		n.SetPeers(addrs)
		if dir != nil {
			dir.Set(v.Self, v.Peers)
		}
		log.Info("mesh members", "instance", v.Self, "peers", len(v.Peers))
	}
}
