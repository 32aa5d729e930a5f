package natlab

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// FrontDoor names how a set of anycast addresses reaches the instances of
// several regions.
type FrontDoor string

const (
	// Accelerator is a managed front door like AWS Global Accelerator: the
	// anycast addresses belong to the front door (its own namespace), which
	// sends each new client flow to the nearest healthy region's instance
	// (DNAT, no SNAT: the instance sees the client's address), keeps the
	// flow on that instance for its life (conntrack), and translates the
	// instance's replies on that flow back to the anycast source. Nothing
	// else passes it: an instance's own sends (a flow it starts) leave from
	// its regional address, which a NAT with address-dependent filtering
	// drops.
	Accelerator FrontDoor = "accel"
	// BGP is plain BGP anycast: every instance holds the anycast address of
	// its role on its interface and may send from it; the internet's router
	// sends traffic for the address to the nearest healthy region (policy
	// routes per source), as BGP announcements would.
	BGP FrontDoor = "bgp"
)

// ParseFrontDoor returns the FrontDoor named s ("accel" or "bgp").
func ParseFrontDoor(s string) (FrontDoor, error) {
	switch f := FrontDoor(strings.ToLower(strings.TrimSpace(s))); f {
	case Accelerator, BGP:
		return f, nil
	}
	return "", fmt.Errorf("%w: front door %q: use accel (managed accelerator) or bgp (plain BGP anycast)", ErrBadName, s)
}

// Port is a protocol and port the front door forwards ("udp", 3478).
type Port struct {
	Proto string // "udp" or "tcp"
	Num   uint16
}

// String returns "udp/3478".
func (p Port) String() string { return fmt.Sprintf("%s/%d", p.Proto, p.Num) }

// Role is one kind of server behind the anycast addresses (rendezvous,
// relay): one anycast address of its own, one instance in each region.
type Role struct {
	// Name names the role ("rendezvous"); instance hosts are named
	// "<region>-<role>".
	Name string
	// Ports are the ports the Accelerator forwards to the role's instances
	// (its listeners); other traffic to the address is dropped. BGP anycast
	// routes the whole address.
	Ports []Port
}

// AnycastConfig configures Lab.AddAnycast.
type AnycastConfig struct {
	// Model is the front door: Accelerator or BGP.
	Model FrontDoor
	// Regions names the regions (2 or 3 in the usual lab; at least 1), in
	// the order a client with no entry in the nearest-region table goes
	// to them.
	Regions []string
	// Roles are the servers every region runs.
	Roles []Role
}

func (c *AnycastConfig) validate() error {
	if _, err := ParseFrontDoor(string(c.Model)); err != nil {
		return err
	}
	if len(c.Regions) == 0 || len(c.Regions) > maxBackbone {
		return fmt.Errorf("%w: anycast: %d regions, want 1 to %d", ErrBadName, len(c.Regions), maxBackbone)
	}
	if len(c.Roles) == 0 || len(c.Regions)*len(c.Roles) > maxBackbone {
		return fmt.Errorf("%w: anycast: %d roles in %d regions, want 1 or more and at most %d instances", ErrBadName, len(c.Roles), len(c.Regions), maxBackbone)
	}
	for i, r := range c.Regions {
		if !prefixRE.MatchString(r) || slices.Contains(c.Regions[:i], r) {
			return fmt.Errorf("%w: anycast: region %q: use distinct names of 1-10 lowercase letters and digits", ErrBadName, r)
		}
	}
	for i, r := range c.Roles {
		if !prefixRE.MatchString(r.Name) || slices.ContainsFunc(c.Roles[:i], func(o Role) bool { return o.Name == r.Name }) {
			return fmt.Errorf("%w: anycast: role %q: use distinct names of 1-10 lowercase letters and digits", ErrBadName, r.Name)
		}
		if c.Model == Accelerator && len(r.Ports) == 0 {
			return fmt.Errorf("%w: anycast: role %s has no ports for the accelerator to forward", ErrBadName, r.Name)
		}
		for _, p := range r.Ports {
			if (p.Proto != "udp" && p.Proto != "tcp") || p.Num == 0 {
				return fmt.Errorf("%w: anycast: role %s: port %s: use udp or tcp and a port from 1", ErrBadName, r.Name, p)
			}
		}
	}
	return nil
}

// Anycast is a set of regions behind anycast addresses, one per role, and
// the front door (or routes) that send each client to its nearest healthy
// region. Build it with Lab.AddAnycast; the lab's Close removes it. Its
// methods are safe for concurrent use.
type Anycast struct {
	// Model is the front door model.
	Model FrontDoor
	// Regions are the regions, in configuration order.
	Regions []*Region
	// FrontDoor is the accelerator's namespace (empty for BGP).
	FrontDoor string

	lab   *Lab
	roles []Role
	addrs map[string]netip.Addr // role -> anycast address

	rules func(ctx context.Context) error // applies the current choice

	// ruleMu serialises applying the choice (iptables, ip rule).
	ruleMu sync.Mutex

	mu      sync.Mutex
	down    map[string]bool         // regions marked unhealthy
	nearest map[netip.Addr][]string // client source -> regions, nearest first
	prio    map[netip.Addr]int      // BGP: the ip rule priority of a source
	current map[netip.Addr]string   // BGP: the region a source's rule points at
}

// Region is one region: a host per role.
type Region struct {
	// Name is the region's name.
	Name string
	// Index is its position in AnycastConfig.Regions, from 0.
	Index int
	// Instances are the region's hosts, one per role, in role order.
	// Each sits on the public segment with its own regional address (Addr);
	// under BGP it also holds its role's anycast address.
	Instances []*Host

	roles []Role
}

// Instance returns the region's host for role, or nil.
func (r *Region) Instance(role string) *Host {
	for i, ro := range r.roles {
		if ro.Name == role {
			return r.Instances[i]
		}
	}
	return nil
}

// Addr returns the anycast address of role (zero when there is no such
// role).
func (a *Anycast) Addr(role string) netip.Addr { return a.addrs[role] }

// Region returns the region named name, or nil.
func (a *Anycast) Region(name string) *Region {
	for _, r := range a.Regions {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// ListenAddr returns the address an instance's server binds for its role:
// its regional address behind the Accelerator (where the front door sends
// the flows), the anycast address under BGP (so that it answers, and sends,
// from it).
func (a *Anycast) ListenAddr(h *Host, role string) netip.Addr {
	if a.Model == BGP {
		return a.addrs[role]
	}
	return h.Addr
}

// SetNearest records which regions are nearest to a client whose traffic
// comes from src (a site's PublicAddr), nearest first; regions not listed
// follow in configuration order. New flows from src go to the first healthy
// one; the Accelerator keeps flows already running where they are.
func (a *Anycast) SetNearest(ctx context.Context, src netip.Addr, regions ...string) error {
	for _, r := range regions {
		if a.Region(r) == nil {
			return fmt.Errorf("natlab: anycast: nearest regions of %s: no region %q", src, r)
		}
	}
	if !isPublic(src) {
		return fmt.Errorf("natlab: anycast: nearest regions of %s: not a public lab address (use a site's PublicAddr)", src)
	}
	a.mu.Lock()
	a.nearest[src] = a.order(regions)
	a.mu.Unlock()
	return a.rules(ctx)
}

// SetHealthy marks a region healthy or not, as a health check would. A
// region marked down gets no traffic: its clients go to their next-nearest
// healthy region, and the Accelerator also moves the flows it had sent
// there (their conntrack entries are deleted, so the next packet of each is
// sent anew). When every region is down, traffic goes to the nearest one
// anyway (nothing better exists).
func (a *Anycast) SetHealthy(ctx context.Context, region string, healthy bool) error {
	r := a.Region(region)
	if r == nil {
		return fmt.Errorf("natlab: anycast: no region %q", region)
	}
	a.mu.Lock()
	changed := a.down[region] == healthy
	if healthy {
		delete(a.down, region)
	} else {
		a.down[region] = true
	}
	a.mu.Unlock()
	if !changed {
		return nil
	}
	a.lab.log.Info("natlab: anycast region health", "region", region, "healthy", healthy)
	if err := a.rules(ctx); err != nil {
		return err
	}
	if !healthy && a.Model == Accelerator {
		return a.forgetFlows(ctx, r)
	}
	return nil
}

// Healthy reports whether a region is marked healthy.
func (a *Anycast) Healthy(region string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.down[region]
}

// RegionFor returns the region new traffic from src goes to now.
func (a *Anycast) RegionFor(src netip.Addr) *Region {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.chooseLocked(src)
}

// order completes a nearest-first list with the regions it leaves out, in
// configuration order.
func (a *Anycast) order(first []string) []string {
	out := slices.Clone(first)
	for _, r := range a.Regions {
		if !slices.Contains(out, r.Name) {
			out = append(out, r.Name)
		}
	}
	return out
}

// chooseLocked returns the first healthy region in src's order (the
// default order for sources without one), or the nearest when none is.
func (a *Anycast) chooseLocked(src netip.Addr) *Region {
	return a.chooseRoleLocked(src, -1)
}

// chooseRoleLocked is chooseLocked for traffic to role number role (-1:
// any), skipping a region whose instance of that role is src itself: an
// instance that is a client of its own role (a relay's stream presence
// binding to the relay) is sent elsewhere, since the accelerator's answer
// from an instance to itself would never pass the front door.
func (a *Anycast) chooseRoleLocked(src netip.Addr, role int) *Region {
	order, ok := a.nearest[src]
	if !ok {
		order = a.order(nil)
	}
	self := func(name string) bool {
		return role >= 0 && a.Region(name).Instances[role].Addr == src
	}
	for _, name := range order {
		if !a.down[name] && !self(name) {
			return a.Region(name)
		}
	}
	return a.Region(order[0])
}

// AddAnycast builds regions behind anycast addresses: for every region and
// role an instance host on the public segment with its own regional
// address, one anycast address per role, and the front door:
//
//   - Accelerator: a namespace "<prefix>-aN" holding the anycast addresses,
//     linked to every instance by a private backbone link (100.127.N.0/24).
//     New flows to a role's listener ports are DNATed to the instance of
//     the source's nearest healthy region; the instance marks connections
//     that arrived over the backbone and routes their replies back over it,
//     where the front door translates them to the anycast source. A packet
//     an instance sends on any other flow leaves from its regional address;
//     the front door forwards from the backbone only replies of flows it
//     tracks.
//   - BGP: each instance holds its role's anycast address too (a /32 on its
//     interface) and the internet router routes the address per source to
//     the nearest healthy region's instance.
//
// On error what was made is left for Close.
func (l *Lab) AddAnycast(ctx context.Context, cfg AnycastConfig) (*Anycast, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a := &Anycast{
		Model:   cfg.Model,
		lab:     l,
		roles:   slices.Clone(cfg.Roles),
		addrs:   map[string]netip.Addr{},
		down:    map[string]bool{},
		nearest: map[netip.Addr][]string{},
		prio:    map[netip.Addr]int{},
		current: map[netip.Addr]string{},
	}
	var names []string
	for _, r := range cfg.Regions {
		for _, ro := range cfg.Roles {
			names = append(names, r+"-"+ro.Name)
		}
	}
	if err := l.claimName(names...); err != nil {
		return nil, fmt.Errorf("natlab: add anycast: %w", err)
	}
	for _, ro := range cfg.Roles {
		addr, err := l.allocPublic(false)
		if err != nil {
			return nil, fmt.Errorf("natlab: add anycast: %w", err)
		}
		a.addrs[ro.Name] = addr
	}
	for i, name := range cfg.Regions {
		r := &Region{Name: name, Index: i, roles: a.roles}
		for _, ro := range cfg.Roles {
			h, err := l.addPublicHost(ctx, name+"-"+ro.Name, "i", false, nil)
			if err != nil {
				return nil, fmt.Errorf("natlab: add anycast: instance %s-%s: %w", name, ro.Name, err)
			}
			r.Instances = append(r.Instances, h)
		}
		a.Regions = append(a.Regions, r)
	}
	// An instance that is itself a client (a relay's stream presence
	// talking to the rendezvous) is nearest its own region.
	for _, r := range a.Regions {
		for _, h := range r.Instances {
			a.nearest[h.Addr] = a.order([]string{r.Name})
		}
	}
	var err error
	if cfg.Model == Accelerator {
		err = l.buildAccelerator(ctx, a)
		a.rules = a.applyAccelerator
	} else {
		err = l.buildBGP(ctx, a)
		a.rules = a.applyBGP
	}
	if err == nil {
		err = a.rules(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("natlab: add anycast (%s): %w", cfg.Model, err)
	}
	l.log.Info("natlab: anycast up", "model", cfg.Model, "regions", cfg.Regions, "addrs", a.addrs)
	return a, nil
}
