package natlab

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
)

// SetAddr moves the host to a new address, as a DHCP renumbering or a move
// to another network would: the old address is removed (which also drops
// the default route), the new one added and the default route restored.
// Sockets bound to the old address stop working; sockets bound to the
// wildcard address carry on from the new one, through a new NAT mapping.
// The NAT's old conntrack entries are left to expire, as on a real router.
//
// Behind a NAT, p is usually another address in the site's LAN (see
// NextLANAddr); an address outside it also works (the router gets a /32
// route to it). The full cone's DNAT follows the site's first host. On the
// public segment, p must be a free address in 203.0.113.0/24 or
// 198.51.100.0/24 and is always installed as a /32 (so traffic keeps going
// through the internet router). For a server, SetAddr replaces the primary
// address (Addr, Addrs[0]).
func (h *Host) SetAddr(ctx context.Context, p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is4() {
		return fmt.Errorf("natlab: set address of %s: %q is not an IPv4 prefix", h.Name, p)
	}
	if h.Site != nil {
		for _, o := range h.Site.Hosts {
			if o != h && o.CurrentAddr() == p.Addr() {
				return fmt.Errorf("natlab: set address of %s: %s is used by %s", h.Name, p.Addr(), o.Name)
			}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.lab
	old := h.Prefix
	if p.Addr() == old.Addr() {
		return nil
	}
	onPublic := isPublic(old.Addr())
	if onPublic {
		if !isPublic(p.Addr()) {
			return fmt.Errorf("natlab: set address of %s: %s is not in %s or %s (the host is on the public segment)", h.Name, p.Addr(), publicNet1, publicNet2)
		}
		l.mu.Lock()
		taken := l.used[p.Addr()]
		if !taken {
			l.used[p.Addr()] = true
		}
		l.mu.Unlock()
		if taken {
			return fmt.Errorf("natlab: set address of %s: %s is already in use", h.Name, p.Addr())
		}
		p = netip.PrefixFrom(p.Addr(), 32)
	} else {
		if isPublic(p.Addr()) {
			return fmt.Errorf("natlab: set address of %s: %s is public; a NATed host needs a LAN address (e.g. in %s)", h.Name, p.Addr(), h.Site.LAN)
		}
		if p.Bits() == 32 || !p.Contains(h.Gateway) {
			p = netip.PrefixFrom(p.Addr(), 32)
		}
	}

	if err := l.ipIn(ctx, h.Netns, "addr", "del", old.String(), "dev", h.Dev); err != nil {
		return fmt.Errorf("natlab: set address of %s: %w", h.Name, err)
	}
	steps := [][]string{
		{"addr", "add", p.String(), "dev", h.Dev},
		{"route", "replace", "default", "via", h.Gateway.String(), "dev", h.Dev, "onlink"},
	}
	for _, args := range steps {
		if err := l.ipIn(ctx, h.Netns, args...); err != nil {
			return fmt.Errorf("natlab: set address of %s: %w", h.Name, err)
		}
	}
	if !onPublic {
		router := h.Site.NAT
		if h.Site.HomeNAT != nil {
			router = h.Site.HomeNAT
		}
		if !router.LAN.Contains(p.Addr()) {
			if err := l.ipIn(ctx, router.Netns, "route", "replace", netip.PrefixFrom(p.Addr(), 32).String(), "dev", lanDev); err != nil {
				return fmt.Errorf("natlab: set address of %s: route on its NAT: %w", h.Name, err)
			}
		}
		if h.Site.Type == FullCone && h == h.Site.Hosts[0] {
			args := append([]string{"-t", "nat", "-R", "PREROUTING", "1"}, dnatRule(wanDev, p.Addr())...)
			if err := l.iptablesIn(ctx, router.Netns, args...); err != nil {
				return fmt.Errorf("natlab: set address of %s: full-cone DNAT: %w", h.Name, err)
			}
			router.Rules = natRules(FullCone, wanDev, p.Addr())
		}
	} else {
		l.mu.Lock()
		delete(l.used, old.Addr())
		l.mu.Unlock()
		if h.Site != nil && h.Site.Type == Public {
			h.Site.PublicAddr = p.Addr()
		}
	}
	h.Prefix = p
	h.Addr = p.Addr()
	h.Addrs = slices.Clone(h.Addrs)
	h.Addrs[0] = p.Addr()
	l.log.Info("natlab: host renumbered", "host", h.Name, "old", old.Addr(), "new", p.Addr())
	return nil
}

// NextLANAddr returns an address in the host's site LAN that no host of the
// site uses, for SetAddr: the site's hosts start at .2, this counts down
// from .254. It returns the zero Prefix for hosts on the public segment.
func (h *Host) NextLANAddr() netip.Prefix {
	if h.Site == nil || !h.Site.LAN.IsValid() {
		return netip.Prefix{}
	}
	last := lastAddr(h.Site.LAN).Prev()
	for a := last; h.Site.LAN.Contains(a) && a != h.Gateway; a = a.Prev() {
		used := false
		for _, o := range h.Site.Hosts {
			if o.CurrentAddr() == a {
				used = true
			}
		}
		if !used {
			return netip.PrefixFrom(a, h.Site.LAN.Bits())
		}
	}
	return netip.Prefix{}
}
