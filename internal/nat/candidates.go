package nat

import (
	"net"
	"net/netip"
	"slices"
)

// InterfaceAddrs returns the machine's interface addresses (net.InterfaceAddrs,
// unmapped).
func InterfaceAddrs() ([]netip.Addr, error) {
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(ifas))
	for _, a := range ifas {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		out = append(out, p.Addr().Unmap())
	}
	return out, nil
}

// Usable reports whether a is worth offering, or probing, as a candidate:
// a unicast address a peer elsewhere could send to. Link-local addresses
// (they need a zone) and the overlay prefix fd4b::/16 are left out.
func Usable(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalUnicast() {
		return false
	}
	if a.Is6() && a.As16()[0] == 0xfd && a.As16()[1] == 0x4b {
		return false
	}
	return true
}

// LocalCandidates lists the addresses a socket bound to bound can be reached
// at: the bound address itself when it is specific, else every usable
// interface address of a family the socket can use, with the socket's port.
// Loopback addresses are offered only when the socket is bound to one.
func LocalCandidates(bound netip.AddrPort, ifaddrs []netip.Addr) []netip.AddrPort {
	ip := bound.Addr().Unmap()
	if ip.IsValid() && !ip.IsUnspecified() {
		if !Usable(ip) {
			return nil
		}
		return []netip.AddrPort{netip.AddrPortFrom(ip, bound.Port())}
	}
	v4only := ip.Is4()
	var out []netip.AddrPort
	for _, a := range ifaddrs {
		a = a.Unmap()
		if !Usable(a) || a.IsLoopback() || (v4only && !a.Is4()) {
			continue
		}
		out = append(out, netip.AddrPortFrom(a, bound.Port()))
	}
	slices.SortFunc(out, func(x, y netip.AddrPort) int { return x.Compare(y) })
	return slices.Compact(out)
}
