package natlab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// Uplink addresses: a /30 between the lab's internet namespace and the root
// namespace (the host), inside the lab's 100.64.0.0/10 but away from the
// ranges sites (100.64.N), double NATs (100.100.N) and anycast backbones
// (100.127.N) use.
var (
	uplinkHostAddr = netip.MustParseAddr("100.126.255.1") // in the root namespace
	uplinkLabAddr  = netip.MustParseAddr("100.126.255.2") // in the internet namespace
)

const uplinkLabDev = "up0" // the uplink's end in the internet namespace

// UplinkConfig configures Lab.AddUplink.
type UplinkConfig struct {
	// Routes are the outside prefixes (the servers' addresses) the lab's
	// internet sends up the link to the host. Required: the lab gets no
	// default route, so nothing else a lab host sends leaves the lab.
	Routes []netip.Prefix
	// Forward turns IPv4 forwarding on in the root namespace while the
	// uplink lives (the old value is put back at Close), for servers
	// beyond this host. Servers on one of the host's own addresses need
	// none.
	Forward bool
}

// Uplink is a link from the lab's internet to the host's root namespace:
// a veth pair ("<prefix>-up" in the root namespace, "up0" in the internet
// namespace) and routes both ways, without NAT: servers outside the lab see
// the lab's public addresses (its NATs' WAN addresses) as they are, so the
// lab's NATs are the only NATs between the peers and the servers, as in the
// lab itself. The host routes the lab's public prefixes (203.0.113.0/24,
// 198.51.100.0/24) back over the link; a server beyond the host needs a
// route to them through the host too.
type Uplink struct {
	// HostDev is the uplink's interface in the root namespace.
	HostDev string
	// HostAddr and LabAddr are the link's two ends.
	HostAddr, LabAddr netip.Addr
	// Routes are the prefixes the lab sends up.
	Routes []netip.Prefix
}

// AddUplink links the lab's internet to the host (see Uplink). One lab per
// host may have an uplink at a time (the host's routes to the lab's public
// prefixes are one set). Close removes it. It needs root.
func (l *Lab) AddUplink(ctx context.Context, cfg UplinkConfig) (*Uplink, error) {
	if len(cfg.Routes) == 0 {
		return nil, errors.New("natlab: AddUplink: no routes: name the outside servers' prefixes")
	}
	for _, r := range cfg.Routes {
		if !r.Addr().Is4() {
			return nil, fmt.Errorf("natlab: AddUplink: route %s: the lab is IPv4 only", r)
		}
		if r.Bits() == 0 {
			return nil, fmt.Errorf("natlab: AddUplink: route %s: no default route; name the servers' prefixes", r)
		}
		// lanNet holds the sites' LANs, the anycast backbones and the
		// uplink's own link: a route into it would send lab traffic meant
		// for the lab up to the host.
		if r.Overlaps(publicNet1) || r.Overlaps(publicNet2) || r.Overlaps(lanNet) {
			return nil, fmt.Errorf("natlab: AddUplink: route %s overlaps the lab's public segment, its LANs, backbones or the uplink's own link", r)
		}
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	if l.uplink != nil {
		l.mu.Unlock()
		return nil, errors.New("natlab: AddUplink: the lab has an uplink already")
	}
	u := &Uplink{HostDev: l.prefix + "-up", HostAddr: uplinkHostAddr, LabAddr: uplinkLabAddr, Routes: cfg.Routes}
	l.uplink = u
	l.mu.Unlock()
	if err := l.buildUplink(ctx, u, cfg); err != nil {
		return nil, errors.Join(err, l.removeUplink())
	}
	l.log.Info("natlab: uplink up", "host_dev", u.HostDev, "routes", cfg.Routes, "forward", cfg.Forward)
	return u, nil
}

func (l *Lab) buildUplink(ctx context.Context, u *Uplink, cfg UplinkConfig) error {
	// The root end is created in the root namespace, the lab end directly
	// in the internet namespace.
	if _, err := run(ctx, nil, l.ip, "link", "add", "name", u.HostDev, "type", "veth", "peer", "name", uplinkLabDev, "netns", l.inet); err != nil {
		return err
	}
	l.mu.Lock()
	l.uplinkMade = true
	l.mu.Unlock()
	link := func(a netip.Addr) string { return netip.PrefixFrom(a, 30).String() }
	for _, args := range [][]string{
		{"addr", "add", link(u.HostAddr), "dev", u.HostDev},
		{"link", "set", u.HostDev, "up"},
		{"route", "add", publicNet1.String(), "via", u.LabAddr.String(), "dev", u.HostDev},
		{"route", "add", publicNet2.String(), "via", u.LabAddr.String(), "dev", u.HostDev},
	} {
		if _, err := run(ctx, nil, l.ip, args...); err != nil {
			if strings.Contains(err.Error(), "File exists") {
				return fmt.Errorf("%w (another lab's uplink, or a leftover route, holds the host's route to the lab's prefixes)", err)
			}
			return err
		}
	}
	if err := l.ipIn(ctx, l.inet, "addr", "add", link(u.LabAddr), "dev", uplinkLabDev); err != nil {
		return err
	}
	if err := l.ipIn(ctx, l.inet, "link", "set", uplinkLabDev, "up"); err != nil {
		return err
	}
	for _, r := range cfg.Routes {
		if err := l.ipIn(ctx, l.inet, "route", "add", r.String(), "via", u.HostAddr.String(), "dev", uplinkLabDev); err != nil {
			return err
		}
	}
	if cfg.Forward {
		old, err := os.ReadFile(ipForwardPath)
		if err != nil {
			return fmt.Errorf("natlab: uplink: %w", err)
		}
		if err := os.WriteFile(ipForwardPath, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("natlab: uplink: IPv4 forwarding on the host: %w", err)
		}
		l.mu.Lock()
		l.forwardWas = strings.TrimSpace(string(old))
		l.mu.Unlock()
	}
	return nil
}

const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// removeUplink deletes the uplink's root end (its lab end and the routes
// through it go with it) and puts IPv4 forwarding back as it was.
func (l *Lab) removeUplink() error {
	l.mu.Lock()
	u, made, fwd := l.uplink, l.uplinkMade, l.forwardWas
	l.uplinkMade, l.forwardWas = false, ""
	l.mu.Unlock()
	if u == nil {
		return nil
	}
	var errs []error
	if fwd != "" && fwd != "1" {
		errs = append(errs, os.WriteFile(ipForwardPath, []byte(fwd), 0o644))
	}
	if made {
		if _, err := run(context.Background(), nil, l.ip, "link", "del", u.HostDev); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
