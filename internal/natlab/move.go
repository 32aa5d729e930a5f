package natlab

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
)

// moves numbers the LAN ports MoveTo makes (a router's ports must differ).
var moves atomic.Uint32

// MoveTo moves host h from its site's LAN to the LAN of site to, as a
// laptop that leaves one network for another: its interface is unplugged
// (the veth removed, so the old NAT hears nothing more from it), a new one
// plugged into to's router with a free address of to's LAN (counting down
// from .254) and to's router as the default gateway. The host's processes
// keep running; sockets bound to the wildcard address now leave through
// to's NAT, with a new public address and new mappings. h.Site becomes to.
// The full cone's DNAT keeps pointing at to's first host.
func (l *Lab) MoveTo(ctx context.Context, h *Host, to *Site) error {
	if h.Site == nil || to == nil || to.Type == Public || to.NAT == nil {
		return fmt.Errorf("natlab: move %s: both sites must be behind a NAT", h.Name)
	}
	router := to.NAT
	if to.HomeNAT != nil {
		router = to.HomeNAT
	}
	addr := netip.Addr{}
	for a := lastAddr(to.LAN).Prev(); to.LAN.Contains(a) && a != router.LAN.Addr(); a = a.Prev() {
		used := false
		for _, o := range to.Hosts {
			used = used || o.CurrentAddr() == a
		}
		if !used {
			addr = a
			break
		}
	}
	if !addr.IsValid() {
		return fmt.Errorf("natlab: move %s: no free address in %s", h.Name, to.LAN)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := l.ipIn(ctx, h.Netns, "link", "del", h.Dev); err != nil {
		return fmt.Errorf("natlab: move %s: unplug: %w", h.Name, err)
	}
	port := fmt.Sprintf("m%d", moves.Add(1))
	if err := l.veth(ctx, h.Netns, h.Dev, router.Netns, port); err != nil {
		return fmt.Errorf("natlab: move %s: %w", h.Name, err)
	}
	p := netip.PrefixFrom(addr, router.LAN.Bits())
	for _, c := range []struct {
		ns   string
		args []string
	}{
		{router.Netns, []string{"link", "set", port, "master", lanDev, "up"}},
		{h.Netns, []string{"addr", "add", p.String(), "dev", h.Dev}},
		{h.Netns, []string{"link", "set", h.Dev, "up"}},
		{h.Netns, []string{"route", "add", "default", "via", router.LAN.Addr().String(), "dev", h.Dev}},
	} {
		if err := l.ipIn(ctx, c.ns, c.args...); err != nil {
			return fmt.Errorf("natlab: move %s: %w", h.Name, err)
		}
	}
	h.Prefix, h.Addr, h.Addrs = p, addr, []netip.Addr{addr}
	h.Gateway = router.LAN.Addr()
	h.Site = to
	l.log.Info("natlab: host moved", "host", h.Name, "site", to.Name, "addr", addr, "public", to.PublicAddr)
	return nil
}
