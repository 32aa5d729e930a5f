package peercmd

import (
	"context"
	"log/slog"

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
	// The node's --allow rules judge inbound flows here as they judge
	// streams: the same peers, ports and refusal counter. A session this
	// peer dialled is open both ways, so without it a peer this one merely
	// connected to could reach every port of the overlay address; replies
	// to flows this side opened pass anyway (overlay.Policy).
	rcfg := overlay.Config{Transport: n, Policy: n.Policy().AllowPacket, Logger: log.With("part", "overlay")}
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
