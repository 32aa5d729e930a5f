// Package addrpolicy decides which destinations a relay may send to on a
// stranger's behalf. A relay on a public address must never become a way
// into the network it runs in: TURN peers and stream-relay destinations are
// refused when they are loopback, private (RFC 1918, unique-local),
// carrier-grade NAT, link-local (the cloud metadata service at
// 169.254.169.254 among them), multicast, reserved or unspecified, or one of
// the server's own addresses, unless the operator allows a range.
//
// Addresses that embed an IPv4 address (IPv4-mapped, IPv4-compatible
// ::/96, SIIT ::ffff:0:0:0/96, NAT64 64:ff9b::/96, 6to4 2002::/16 and the
// client of a Teredo 2001::/32 address) are judged by the IPv4 address they
// carry.
package addrpolicy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// ErrDenied is the error Check returns for a refused destination.
var ErrDenied = errors.New("destination refused")

// DefaultDenied lists the ranges refused unless allowed: what no relay on
// the public internet has any business sending to.
var DefaultDenied = mustPrefixes(
	"0.0.0.0/8",      // "this network"
	"10.0.0.0/8",     // RFC 1918
	"100.64.0.0/10",  // carrier-grade NAT (RFC 6598)
	"127.0.0.0/8",    // loopback
	"169.254.0.0/16", // link-local, cloud metadata
	"172.16.0.0/12",  // RFC 1918
	"192.0.0.0/24",   // IETF protocol assignments
	"192.168.0.0/16", // RFC 1918
	"198.18.0.0/15",  // benchmarking
	"224.0.0.0/4",    // multicast
	"240.0.0.0/4",    // reserved, broadcast
	"::/128",         // unspecified
	"::1/128",        // loopback
	"64:ff9b:1::/48", // local-use NAT64 (RFC 8215)
	"100::/64",       // discard-only
	"fc00::/7",       // unique-local
	"fe80::/10",      // link-local
	"fec0::/10",      // old site-local
	"ff00::/8",       // multicast
)

// Policy is an immutable set of rules. The zero Policy refuses
// DefaultDenied and allows everything else.
type Policy struct {
	allow []netip.Prefix
	own   map[netip.Addr]bool
}

// New returns a Policy that refuses DefaultDenied and own, except within
// allow (an operator's explicit exceptions, which win over everything).
func New(allow []netip.Prefix, own []netip.Addr) *Policy {
	p := &Policy{allow: allow, own: make(map[netip.Addr]bool, len(own))}
	for _, a := range own {
		p.own[a.Unmap().WithZone("")] = true
	}
	return p
}

// LocalAddrs returns the addresses on this host's interfaces, the server's
// own addresses for New.
func LocalAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("interface addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// Check returns nil if a relay may send to a, and an error wrapping
// ErrDenied that names the rule otherwise.
func (p *Policy) Check(a netip.Addr) error {
	a = a.WithZone("")
	if !a.IsValid() {
		return fmt.Errorf("%w: invalid address", ErrDenied)
	}
	if p != nil {
		for _, pre := range p.allow {
			if pre.Contains(a) || pre.Contains(a.Unmap()) {
				return nil
			}
		}
	}
	v := embedded(a)
	if p != nil && (p.own[a] || p.own[v]) {
		return fmt.Errorf("%w: %v is this server's own address", ErrDenied, a)
	}
	for _, pre := range DefaultDenied {
		if pre.Contains(v) {
			if p != nil {
				for _, al := range p.allow {
					if al.Contains(v) {
						return nil
					}
				}
			}
			return fmt.Errorf("%w: %v is in %v (allow it with an explicit range if it is meant)", ErrDenied, a, pre)
		}
	}
	return nil
}

// Allowed reports whether Check(a) is nil.
func (p *Policy) Allowed(a netip.Addr) bool { return p.Check(a) == nil }

var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4 = netip.MustParsePrefix("2002::/16")
	compat = netip.MustParsePrefix("::/96")           // IPv4-compatible (deprecated; a sit tunnel routes it)
	siit   = netip.MustParsePrefix("::ffff:0:0:0/96") // RFC 2765 IPv4-translated
	teredo = netip.MustParsePrefix("2001::/32")
)

// embedded returns the IPv4 address a carries (mapped, IPv4-compatible,
// SIIT, NAT64, 6to4, a Teredo client's), or a.
func embedded(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if !a.Is6() {
		return a
	}
	b := a.As16()
	switch {
	case nat64.Contains(a), compat.Contains(a), siit.Contains(a):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	case teredo.Contains(a): // the client's address, inverted (RFC 4380)
		return netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})
	case sixTo4.Contains(a):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
	}
	return a
}

// ParsePrefixes parses a comma-separated list of CIDR prefixes (a flag's
// value); a bare address is its own /32 or /128.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if pre, err := netip.ParsePrefix(f); err == nil {
			out = append(out, pre.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR prefix nor an address (write e.g. 10.1.0.0/16)", f)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}
