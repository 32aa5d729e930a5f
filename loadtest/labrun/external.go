package labrun

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/internal/rzclient"
)

// startExternal links the lab to the host (natlab.Lab.AddUplink) and points
// the peers at the servers outside it: no server runs in the lab.
func (l *Lab) startExternal(ctx context.Context) error {
	ext := l.cfg.External
	addr, _, err := rzclient.ParseServer(ext.Connect)
	if err != nil {
		return fmt.Errorf("labrun: external rendezvous: %w", err)
	}
	if !addr.Addr().Is4() {
		return fmt.Errorf("labrun: external rendezvous %s: the lab is IPv4 only", addr)
	}
	routes := ext.Routes
	if len(routes) == 0 {
		routes = []netip.Prefix{netip.PrefixFrom(addr.Addr(), 32)}
	}
	if _, err := l.Net.AddUplink(ctx, natlab.UplinkConfig{Routes: routes, Forward: ext.Forward}); err != nil {
		return err
	}
	l.Connect = ext.Connect
	if ext.StreamURL != "" {
		l.StreamURL = ext.StreamURL
		l.peerStream = hasFlag(ctx, l.cfg.Bins.Peer, "stream-relay", "up")
	}
	l.cfg.Logger.Info("labrun: external servers", "connect", l.Connect, "routes", routes, "stream", l.StreamURL)
	return nil
}
