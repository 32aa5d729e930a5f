package natlab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"time"
)

// Site is a place peers live: one or two hosts behind a NAT of one type
// (or, for Public, one host on the public segment).
type Site struct {
	// Name is the name given to AddSite.
	Name string
	// Type is the site's NAT type.
	Type NATType
	// Hosts are the site's hosts: one, or two for SameNAT (on one LAN).
	Hosts []*Host
	// PublicAddr is the address servers see the site's traffic come from:
	// the outermost NAT's WAN address, or the host's own for Public.
	PublicAddr netip.Addr
	// LAN is the hosts' network (100.64.N.0/24); zero for Public.
	LAN netip.Prefix
	// NAT is the NAT facing the internet (for Double, the carrier NAT);
	// nil for Public.
	NAT *NAT
	// HomeNAT is a Double site's inner (home) NAT, whose WAN sits on the
	// carrier's network (100.100.N.2); nil for other types.
	HomeNAT *NAT
}

// Host returns the site's first host.
func (s *Site) Host() *Host { return s.Hosts[0] }

// NAT is a NAT router: a namespace forwarding between its LAN and WAN with
// iptables rules for its type, firewalled like a home router.
type NAT struct {
	// Netns is the router's namespace.
	Netns string
	// WAN is its outside address (public, or the carrier network's for a
	// double NAT's home router).
	WAN netip.Addr
	// LAN is its inside network; the router holds LAN.Addr().
	LAN netip.Prefix
	// Rules is the iptables-restore ruleset loaded in Netns.
	Rules string

	lab *Lab
}

// Command returns a command run in the NAT's namespace, like
// Host.Command (for example `conntrack -L` or `iptables -S` to debug).
func (n *NAT) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return n.lab.nsCommand(ctx, n.Netns, name, args...)
}

// AddServer adds a host on the public segment with two addresses, one in
// 203.0.113.0/24 (Addr) and one in 198.51.100.0/24 (Addrs[1]), so that a
// server can listen on an alternate address (RFC 5780). No NAT, no
// firewall. Run the server with Host.Command or open its sockets with
// Host.ListenUDP.
func (l *Lab) AddServer(ctx context.Context, name string) (*Host, error) {
	if err := l.claimName(name); err != nil {
		return nil, err
	}
	var made []string
	h, err := l.addPublicHost(ctx, name, "s", true, &made)
	if err != nil {
		err = fmt.Errorf("natlab: add server %s: %w", name, err)
		return nil, errors.Join(err, l.rollback(made))
	}
	l.mu.Lock()
	l.servers = append(l.servers, h)
	l.mu.Unlock()
	l.log.Info("natlab: server up", "name", name, "netns", h.Netns, "addrs", h.Addrs)
	return h, nil
}

// addPublicHost builds a namespace on the public segment with one or two
// (one per public /24) addresses.
func (l *Lab) addPublicHost(ctx context.Context, name, kind string, two bool, track *[]string) (*Host, error) {
	a1, err := l.allocPublic(true)
	if err != nil {
		return nil, err
	}
	addrs := []netip.Addr{a1}
	if two {
		a2, err := l.allocPublic(false)
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, a2)
	}
	h := &Host{
		Name:    name,
		Netns:   l.nsName(kind),
		Dev:     hostDev,
		Addr:    a1,
		Addrs:   addrs,
		Prefix:  netip.PrefixFrom(a1, 32),
		Gateway: publicNet1.Addr().Next(),
		lab:     l,
	}
	if err := l.addNetns(ctx, h.Netns, track); err != nil {
		return nil, err
	}
	if err := l.attachPublic(ctx, h.Netns, hostDev, addrs); err != nil {
		return nil, err
	}
	return h, nil
}

// AddSite adds a site of type t named name: the NAT namespace(s), a LAN
// 100.64.N.0/24 with the router at .1 and the hosts from .2, and the NAT's
// WAN on the public segment. A Public site is one host on the public
// segment. Host names are the site name, or "<name>-1" and "<name>-2" for
// SameNAT. On error the site's namespaces are removed again (what cannot be
// removed is left to Close). Call Verify to prove the NAT behaves as named.
func (l *Lab) AddSite(ctx context.Context, name string, t NATType) (*Site, error) {
	if !t.Valid() {
		return nil, fmt.Errorf("natlab: add site %s: %w %q: want one of %s", name, ErrUnknownNATType, t, typeList())
	}
	hostNames := []string{name}
	if t.hosts() == 2 {
		hostNames = []string{name + "-1", name + "-2"}
	}
	if err := l.claimName(append([]string{name}, hostNames...)...); err != nil {
		return nil, fmt.Errorf("natlab: add site: %w", err)
	}
	start := time.Now()
	var made []string
	s, err := l.buildSite(ctx, name, t, hostNames, &made)
	if err != nil {
		err = fmt.Errorf("natlab: add %s site %s: %w", t, name, err)
		return nil, errors.Join(err, l.rollback(made))
	}
	l.mu.Lock()
	l.sites = append(l.sites, s)
	l.mu.Unlock()
	l.log.Info("natlab: site up", "name", name, "type", t, "public", s.PublicAddr, "lan", s.LAN, "took", time.Since(start).Round(time.Millisecond))
	return s, nil
}

// rollback removes the namespaces a failed AddSite or AddServer made,
// keeping those it could not remove for Close.
func (l *Lab) rollback(made []string) error {
	var errs []error
	var gone []string
	for i := len(made) - 1; i >= 0; i-- {
		if err := deleteNetns(made[i]); err != nil {
			errs = append(errs, err)
			continue
		}
		gone = append(gone, made[i])
	}
	l.mu.Lock()
	l.netns = slices.DeleteFunc(l.netns, func(n string) bool { return slices.Contains(gone, n) })
	l.mu.Unlock()
	return errors.Join(errs...)
}

func (l *Lab) buildSite(ctx context.Context, name string, t NATType, hostNames []string, made *[]string) (*Site, error) {
	s := &Site{Name: name, Type: t}
	if t == Public {
		h, err := l.addPublicHost(ctx, hostNames[0], "h", false, made)
		if err != nil {
			return nil, err
		}
		h.Site = s
		s.Hosts = []*Host{h}
		s.PublicAddr = h.Addr
		return s, nil
	}

	l.mu.Lock()
	n := l.nextSite
	if n > maxSites {
		l.mu.Unlock()
		return nil, fmt.Errorf("%w: no LAN left (at most %d sites)", ErrExhausted, maxSites)
	}
	l.nextSite++
	l.mu.Unlock()
	lan := siteNet(lanNet, n)
	wanAddr, err := l.allocPublic(true)
	if err != nil {
		return nil, err
	}
	s.LAN = lan
	s.PublicAddr = wanAddr

	router := &NAT{Netns: l.nsName("n"), LAN: netip.PrefixFrom(lan.Addr().Next(), 24), lab: l}
	if err := l.addRouter(ctx, router.Netns, made); err != nil {
		return nil, err
	}
	if t == Double {
		carrierLAN := siteNet(carrierNet, n)
		carrier := &NAT{Netns: l.nsName("c"), WAN: wanAddr, LAN: netip.PrefixFrom(carrierLAN.Addr().Next(), 24), lab: l}
		if err := l.addRouter(ctx, carrier.Netns, made); err != nil {
			return nil, err
		}
		if err := l.attachPublic(ctx, carrier.Netns, wanDev, []netip.Addr{wanAddr}); err != nil {
			return nil, err
		}
		router.WAN = carrier.LAN.Addr().Next()
		if err := l.veth(ctx, carrier.Netns, lanDev, router.Netns, wanDev); err != nil {
			return nil, err
		}
		for _, c := range []struct {
			ns   string
			args []string
		}{
			{carrier.Netns, []string{"addr", "add", carrier.LAN.String(), "dev", lanDev}},
			{carrier.Netns, []string{"link", "set", lanDev, "up"}},
			{router.Netns, []string{"addr", "add", netip.PrefixFrom(router.WAN, 24).String(), "dev", wanDev}},
			{router.Netns, []string{"link", "set", wanDev, "up"}},
			{router.Netns, []string{"route", "add", "default", "via", carrier.LAN.Addr().String(), "dev", wanDev}},
		} {
			if err := l.ipIn(ctx, c.ns, c.args...); err != nil {
				return nil, err
			}
		}
		carrier.Rules = natRules(PortRestricted, wanDev, netip.Addr{})
		if err := l.loadRules(ctx, carrier); err != nil {
			return nil, err
		}
		s.NAT, s.HomeNAT = carrier, router
	} else {
		router.WAN = wanAddr
		if err := l.attachPublic(ctx, router.Netns, wanDev, []netip.Addr{wanAddr}); err != nil {
			return nil, err
		}
		s.NAT = router
	}

	// The LAN: a bridge in the router holding the gateway address, one
	// veth per host.
	for _, args := range [][]string{
		{"link", "add", lanDev, "address", bridgeMAC(n), "type", "bridge"},
		{"addr", "add", router.LAN.String(), "dev", lanDev},
		{"link", "set", lanDev, "up"},
	} {
		if err := l.ipIn(ctx, router.Netns, args...); err != nil {
			return nil, err
		}
	}
	addr := router.LAN.Addr()
	for i, hn := range hostNames {
		addr = addr.Next()
		h := &Host{
			Name:    hn,
			Netns:   l.nsName("h"),
			Dev:     hostDev,
			Addr:    addr,
			Addrs:   []netip.Addr{addr},
			Prefix:  netip.PrefixFrom(addr, 24),
			Gateway: router.LAN.Addr(),
			Site:    s,
			lab:     l,
		}
		if err := l.addNetns(ctx, h.Netns, made); err != nil {
			return nil, err
		}
		port := fmt.Sprintf("h%d", i+1)
		if err := l.veth(ctx, h.Netns, hostDev, router.Netns, port); err != nil {
			return nil, err
		}
		for _, c := range []struct {
			ns   string
			args []string
		}{
			{router.Netns, []string{"link", "set", port, "master", lanDev, "up"}},
			{h.Netns, []string{"addr", "add", h.Prefix.String(), "dev", hostDev}},
			{h.Netns, []string{"link", "set", hostDev, "up"}},
			{h.Netns, []string{"route", "add", "default", "via", h.Gateway.String(), "dev", hostDev}},
		} {
			if err := l.ipIn(ctx, c.ns, c.args...); err != nil {
				return nil, err
			}
		}
		s.Hosts = append(s.Hosts, h)
	}
	ruleType := t
	if t == Double || t == SameNAT {
		ruleType = PortRestricted
	}
	router.Rules = natRules(ruleType, wanDev, s.Hosts[0].Addr)
	if err := l.loadRules(ctx, router); err != nil {
		return nil, err
	}
	return s, nil
}

// addRouter makes a namespace that forwards.
func (l *Lab) addRouter(ctx context.Context, ns string, track *[]string) error {
	if err := l.addNetns(ctx, ns, track); err != nil {
		return err
	}
	return setSysctls(ns, "ipv4/ip_forward", "1")
}

// loadRules loads a NAT's ruleset.
func (l *Lab) loadRules(ctx context.Context, n *NAT) error {
	if err := l.step("iptables " + n.Netns); err != nil {
		return err
	}
	return l.restoreIn(ctx, n.Netns, n.Rules)
}
