package natlab

import (
	"fmt"
	"net/netip"
)

// The lab's address plan (fixed; see the package doc). The public segment
// is routed by the internet namespace, which owns the first address of
// each public /24.
var (
	// publicNet1 holds every public address: servers, NAT WANs, public hosts.
	publicNet1 = netip.MustParsePrefix("203.0.113.0/24")
	// publicNet2 holds the servers' second addresses (and NAT WANs once
	// publicNet1 is full).
	publicNet2 = netip.MustParsePrefix("198.51.100.0/24")
	// lanNet holds the sites' LANs, one /24 each: 100.64.N.0/24 for site N
	// (N from 1; past 100.64.255.0 the count goes on into 100.65.0.0 and
	// up, staying below 100.100.0.0).
	lanNet = netip.MustParsePrefix("100.64.0.0/10")
	// carrierNet holds the links between a double NAT's home router and
	// its carrier NAT: 100.100.N.0/24 for site N (home WAN .2, carrier .1;
	// past N=255 the count goes on into 100.101.0.0 and up, above lanNet's
	// part).
	carrierNet = netip.MustParsePrefix("100.100.0.0/16")
)

// maxSites is how many LAN /24s fit in 100.64.0.0 .. 100.99.255.0 (below
// carrierNet) and, for double NATs, how many carrier /24s fit.
const maxSites = 36*256 - 1

// allocPublic takes a free public address, from publicNet1 first when
// first is true, else from publicNet2 first.
func (l *Lab) allocPublic(first bool) (netip.Addr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	nets := []netip.Prefix{publicNet1, publicNet2}
	if !first {
		nets[0], nets[1] = nets[1], nets[0]
	}
	for _, n := range nets {
		for a := n.Addr().Next().Next(); n.Contains(a); a = a.Next() {
			if a == lastAddr(n) {
				break
			}
			if !l.used[a] {
				l.used[a] = true
				return a, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: no public address left in %s or %s", ErrExhausted, publicNet1, publicNet2)
}

// lastAddr returns the broadcast address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	hostBits := 32 - p.Bits()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= (1 << hostBits) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// isPublic reports whether a is on the public segment.
func isPublic(a netip.Addr) bool { return publicNet1.Contains(a) || publicNet2.Contains(a) }

// siteNet returns the n-th /24 of base (n from 1).
func siteNet(base netip.Prefix, n int) netip.Prefix {
	b := base.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(n)<<8
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), 0}), 24)
}

// bridgeMAC returns a fixed, locally administered MAC address for the n-th
// bridge (0: the internet). A bridge without an explicit address takes the
// lowest of its ports' addresses and changes it as ports come and go, which
// would leave hosts with a stale ARP entry for their gateway.
func bridgeMAC(n int) string {
	return fmt.Sprintf("02:6b:6d:%02x:%02x:%02x", byte(n>>16), byte(n>>8), byte(n))
}
