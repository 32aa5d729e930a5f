package natlab

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/keymesh/keymesh/internal/testutil/debpkg"
)

// The accelerator's backbone: link N (one per instance, from 1) is
// 100.127.N.0/24, the front door at .1 and the instance at .2. Replies of
// flows that came over it are routed back over it by the instance's
// routing table backboneTable, chosen by connection mark backboneMark.
const (
	backboneDev   = "bb" // an instance's end of its backbone link
	backboneTable = "200"
	backboneMark  = "1"
	maxBackbone   = 250
	// bgpTableBase is the first routing table of the internet router
	// holding a client's routes to the anycast addresses (one per client
	// with a nearest-region entry).
	bgpTableBase = 1000
)

var backboneNet = netip.MustParsePrefix("100.127.0.0/16")

// backboneAddrs returns the front door's and the instance's address on
// backbone link n.
func backboneAddrs(n int) (fd, inst netip.Prefix) {
	p := siteNet(backboneNet, n)
	return netip.PrefixFrom(p.Addr().Next(), 24), netip.PrefixFrom(p.Addr().Next().Next(), 24)
}

// instances returns every instance host with its role, region by region.
func (a *Anycast) instances() (hosts []*Host, roles []Role) {
	for _, r := range a.Regions {
		hosts = append(hosts, r.Instances...)
		roles = append(roles, r.roles...)
	}
	return hosts, roles
}

// buildAccelerator makes the front door namespace with the anycast
// addresses, a backbone link to every instance, and the instances' reply
// routing.
func (l *Lab) buildAccelerator(ctx context.Context, a *Anycast) error {
	if _, err := debpkg.Ensure(ctx, "conntrack", "conntrack"); err != nil {
		return fmt.Errorf("the accelerator moves flows off a dead region with conntrack: %w", err)
	}
	fd := l.nsName("a")
	a.FrontDoor = fd
	if err := l.addRouter(ctx, fd, nil); err != nil {
		return err
	}
	var anycast []netip.Addr
	for _, ro := range a.roles {
		anycast = append(anycast, a.addrs[ro.Name])
	}
	if err := l.attachPublic(ctx, fd, wanDev, anycast); err != nil {
		return err
	}
	hosts, _ := a.instances()
	for i, h := range hosts {
		n := i + 1
		fdAddr, instAddr := backboneAddrs(n)
		dev := "b" + strconv.Itoa(n)
		if err := l.veth(ctx, fd, dev, h.Netns, backboneDev); err != nil {
			return err
		}
		for _, c := range []struct {
			ns   string
			args []string
		}{
			{fd, []string{"addr", "add", fdAddr.String(), "dev", dev}},
			{fd, []string{"link", "set", dev, "up"}},
			{fd, []string{"route", "add", netip.PrefixFrom(h.Addr, 32).String(), "via", instAddr.Addr().String(), "dev", dev, "table", backboneTable}},
			{h.Netns, []string{"addr", "add", instAddr.String(), "dev", backboneDev}},
			{h.Netns, []string{"link", "set", backboneDev, "up"}},
			{h.Netns, []string{"route", "add", "default", "via", fdAddr.Addr().String(), "dev", backboneDev, "table", backboneTable}},
			{h.Netns, []string{"rule", "add", "fwmark", backboneMark, "lookup", backboneTable}},
		} {
			if err := l.ipIn(ctx, c.ns, c.args...); err != nil {
				return err
			}
		}
		// Accepted TCP connections and kernel replies (RST, ICMP) follow
		// the mark of the packet that caused them.
		if err := setSysctls(h.Netns, "ipv4/tcp_fwmark_accept", "1", "ipv4/fwmark_reflect", "1"); err != nil {
			return err
		}
		if err := l.restoreIn(ctx, h.Netns, instanceRules()); err != nil {
			return err
		}
	}
	// Only packets that came in for an anycast address take the backbone
	// (once DNATed); everything else to an instance's regional address,
	// such as the answers to an instance that is itself a client, goes
	// over the internet.
	if err := l.ipIn(ctx, fd, "rule", "add", "fwmark", backboneMark, "lookup", backboneTable); err != nil {
		return err
	}
	return l.restoreIn(ctx, fd, frontDoorFilter(anycast))
}

// instanceRules marks every connection that arrived over the backbone and
// gives its packets the mark again on the way out, so that the replies are
// routed back to the front door (table backboneTable); everything else
// the instance sends takes its default route, from its regional address.
func instanceRules() string {
	return "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n" +
		"-A PREROUTING -i " + backboneDev + " -j CONNMARK --set-mark " + backboneMark + "\n" +
		"-A PREROUTING -m connmark --mark " + backboneMark + " -j CONNMARK --restore-mark\n" +
		"-A OUTPUT -m connmark --mark " + backboneMark + " -j CONNMARK --restore-mark\n" +
		"COMMIT\n"
}

// frontDoorFilter is the accelerator's mangle and filter tables: packets
// for the anycast addresses are marked to take the backbone (table
// backboneTable) once DNATed; nothing reaches the front door itself; from
// the internet only flows it DNATed pass (the listeners), and from the
// backbone only the replies of those flows.
func frontDoorFilter(anycast []netip.Addr) string {
	var b strings.Builder
	b.WriteString("*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
	for _, a := range anycast {
		fmt.Fprintf(&b, "-A PREROUTING -i %s -d %s/32 -j MARK --set-mark %s\n", wanDev, a, backboneMark)
	}
	b.WriteString("COMMIT\n")
	return b.String() + "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n" +
		"-A INPUT -i " + wanDev + " -m conntrack --ctstate NEW -j DROP\n" +
		"-A FORWARD -i " + wanDev + " -m conntrack --ctstate DNAT --ctdir ORIGINAL -j ACCEPT\n" +
		"-A FORWARD -o " + wanDev + " -m conntrack --ctstate DNAT --ctdir REPLY -j ACCEPT\n" +
		"COMMIT\n"
}

// frontDoorNAT is the accelerator's nat table for the current choice: per
// client with a nearest-region entry, its listeners DNATed to its region's
// instances; then everyone else's to the default region's.
func (a *Anycast) frontDoorNAT() string {
	a.mu.Lock()
	srcs := make([]netip.Addr, 0, len(a.nearest))
	for s := range a.nearest {
		srcs = append(srcs, s)
	}
	slices.SortFunc(srcs, func(x, y netip.Addr) int { return x.Compare(y) })
	srcs = append(srcs, netip.Addr{}) // everyone else, last
	choice := map[netip.Addr][]*Region{}
	for _, s := range srcs {
		for i := range a.roles {
			choice[s] = append(choice[s], a.chooseRoleLocked(s, i))
		}
	}
	a.mu.Unlock()

	var b strings.Builder
	b.WriteString("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
	for _, s := range srcs {
		match := ""
		if s.IsValid() {
			match = " -s " + s.String() + "/32"
		}
		for i, ro := range a.roles {
			for _, p := range ro.Ports {
				fmt.Fprintf(&b, "-A PREROUTING -i %s%s -d %s/32 -p %s --dport %d -j DNAT --to-destination %s\n",
					wanDev, match, a.addrs[ro.Name], p.Proto, p.Num, choice[s][i].Instances[i].Addr)
			}
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// applyAccelerator loads the nat table for the current choice (only new
// flows follow it: conntrack keeps running ones on their instance).
func (a *Anycast) applyAccelerator(ctx context.Context) error {
	a.ruleMu.Lock()
	defer a.ruleMu.Unlock()
	return a.lab.restoreIn(ctx, a.FrontDoor, a.frontDoorNAT())
}

// forgetFlows deletes the front door's conntrack entries of flows sent to a
// region's instances, so that their next packets are sent anew (to a
// healthy region), as an accelerator moves flows off a failed endpoint.
func (a *Anycast) forgetFlows(ctx context.Context, r *Region) error {
	for _, h := range r.Instances {
		out, err := run(ctx, nil, a.lab.ip, "netns", "exec", a.FrontDoor, "conntrack", "-D", "--reply-src", h.Addr.String())
		// conntrack exits 1 when no entry matched.
		if err != nil && !strings.Contains(string(out), "0 flow entries") {
			return fmt.Errorf("natlab: anycast: forget flows of %s: %w", h.Name, err)
		}
	}
	return nil
}

// buildBGP gives every instance its role's anycast address and the
// internet router a route to each anycast address (in the main table, for
// clients without an entry), set by applyBGP.
//
// Linux drops a packet arriving with one of its own addresses as source
// ("martian"), and instances of a role share the anycast address: what one
// sends from it to another's regional address (a relay forwarding to a
// peer's stream-relay presence in another region) would be lost. Instances
// therefore accept such packets (accept_local), as a BGP deployment must
// configure them.
func (l *Lab) buildBGP(ctx context.Context, a *Anycast) error {
	for _, r := range a.Regions {
		for i, h := range r.Instances {
			addr := a.addrs[r.roles[i].Name]
			if err := l.ipIn(ctx, h.Netns, "addr", "add", netip.PrefixFrom(addr, 32).String(), "dev", h.Dev); err != nil {
				return err
			}
			if err := setSysctls(h.Netns, "ipv4/conf/all/accept_local", "1", "ipv4/conf/"+h.Dev+"/accept_local", "1"); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyBGP points each client's routes (and the main table's, for everyone
// else) at the instances of its region, as BGP would after announcements
// change. Each client with a nearest-region entry has its own table,
// selected by an ip rule on its source address; routes are replaced in
// place, so no packet falls between two states.
func (a *Anycast) applyBGP(ctx context.Context) error {
	a.ruleMu.Lock()
	defer a.ruleMu.Unlock()
	type want struct {
		src   netip.Addr
		table int
		r     *Region
		isNew bool
	}
	a.mu.Lock()
	var todo []want
	for src := range a.nearest {
		r := a.chooseLocked(src)
		p, ok := a.prio[src]
		if !ok {
			p = bgpTableBase + len(a.prio)
			a.prio[src] = p
		}
		if a.current[src] != r.Name {
			todo = append(todo, want{src, p, r, !ok})
		}
	}
	def := a.chooseLocked(netip.Addr{})
	if a.current[netip.Addr{}] != def.Name {
		todo = append(todo, want{netip.Addr{}, 0, def, false})
	}
	a.mu.Unlock()
	for _, w := range todo {
		table := "main"
		if w.src.IsValid() {
			table = strconv.Itoa(w.table)
		}
		for i, ro := range a.roles {
			args := []string{"route", "replace", netip.PrefixFrom(a.addrs[ro.Name], 32).String(),
				"via", w.r.Instances[i].Addr.String(), "dev", bridgeDev, "onlink", "table", table}
			if err := a.lab.ipIn(ctx, a.lab.inet, args...); err != nil {
				return fmt.Errorf("natlab: anycast: route: %w", err)
			}
		}
		if w.isNew {
			if err := a.lab.ipIn(ctx, a.lab.inet, "rule", "add", "from", netip.PrefixFrom(w.src, 32).String(),
				"lookup", table, "priority", table); err != nil {
				return fmt.Errorf("natlab: anycast: rule: %w", err)
			}
		}
		a.mu.Lock()
		a.current[w.src] = w.r.Name
		a.mu.Unlock()
	}
	return nil
}
