package peercmd

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/keymesh/keymesh/internal/crypto"

	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/overlay"
	"github.com/keymesh/keymesh/node"
)

// startOverlay starts the overlay IP mode o asks for, if any: the
// userspace stack (handed to the daemon through cfg) or the TUN device. It
// returns the function that stops it.
func startOverlay(ctx context.Context, log *slog.Logger, o upOptions, n *node.Node, cfg *daemon.Config) (func(), error) {
	if !o.Userspace && o.TUN == "" {
		return func() {}, nil
	}
	policy := o.Policy
	if policy == nil && !o.AllowAny {
		policy = allowListPolicy(o.Allow)
	}
	rcfg := overlay.Config{Transport: n, Policy: policy, Logger: log.With("part", "overlay")}
	var run func(context.Context) error
	var stats func() overlay.Stats
	if o.Userspace {
		st, err := overlay.NewStack(rcfg)
		if err != nil {
			return nil, err
		}
		cfg.Overlay = st
		run, stats = st.Run, st.Router.Stats
		log.Info("userspace mode: the overlay address serves and reaches TCP and UDP through a userspace stack", "overlay", n.OverlayAddr().String())
	} else {
		dev, err := overlay.CreateTUN(ctx, o.TUN, n.OverlayAddr())
		if err != nil {
			return nil, err
		}
		rcfg.Device = dev
		r, err := overlay.New(rcfg)
		if err != nil {
			dev.Close()
			return nil, err
		}
		run, stats = r.Run, r.Stats
		log.Info("TUN mode: the overlay prefix is routed through the device", "device", o.TUN, "overlay", n.OverlayAddr().String())
	}
	cfg.Packets = stats
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := run(ctx); err != nil {
			log.Error("overlay stopped", "err", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}, nil
}

// allowListPolicy admits inbound flows from the peers of the --allow list
// only. A session this peer dialled is open both ways, so without it a peer
// this one merely connected to could reach every port of the overlay
// address; replies to flows this side opened pass anyway (overlay.Policy).
func allowListPolicy(allow []string) overlay.Policy {
	ok := map[netip.Addr]bool{}
	for _, a := range allow {
		if id, err := crypto.ParsePeerID(a); err == nil {
			ok[id.OverlayAddr()] = true
		}
	}
	return func(src, _ netip.AddrPort, _ uint8) bool { return ok[src.Addr()] }
}
