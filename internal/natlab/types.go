package natlab

import (
	"fmt"
	"strings"
)

// NATType names the kind of network a site sits behind. The names follow
// RFC 4787's terms for mapping and filtering behaviour; each type is built
// from real Linux netfilter rules (see the constants) and checked by
// [Lab.Verify].
type NATType string

const (
	// Public puts the host directly on the public segment: no NAT, no
	// firewall. What servers see is the host's own address and port.
	Public NATType = "public"
	// FullCone is endpoint-independent mapping and endpoint-independent
	// filtering: MASQUERADE (which keeps the source port when it is free)
	// plus a DNAT of every inbound UDP packet on the WAN to the host, so
	// anyone who learns the mapping can send to it.
	FullCone NATType = "full-cone"
	// PortRestricted is endpoint-independent mapping with address-and-port-
	// dependent filtering: plain MASQUERADE. The mapping keeps the host's
	// source port when it can; only endpoints the host has sent to get in.
	PortRestricted NATType = "port-restricted"
	// Symmetric is address-and-port-dependent mapping: MASQUERADE
	// --random-fully, a new random port for every destination ("hard" NAT).
	Symmetric NATType = "symmetric"
	// Double is a port-restricted home NAT behind a second, port-restricted
	// carrier NAT (carrier-grade NAT). The public address is the carrier's.
	Double NATType = "double"
	// UDPBlocked drops all forwarded UDP in both directions at the NAT; TCP
	// is masqueraded and works. Peers here must fall back to TCP/TLS.
	UDPBlocked NATType = "udp-blocked"
	// SameNAT is one port-restricted NAT with two hosts on its LAN, for
	// two peers behind the same NAT. Linux does not hairpin: a host cannot
	// reach the other through the NAT's public address, only over the LAN.
	SameNAT NATType = "same-nat"
)

// AllTypes returns every NAT type, in a stable order (easy to hard, then
// the special cases).
func AllTypes() []NATType {
	return []NATType{Public, FullCone, PortRestricted, Symmetric, Double, UDPBlocked, SameNAT}
}

// ParseNATType returns the NATType named s (case-insensitive; surrounding
// space ignored). The error lists the valid names.
func ParseNATType(s string) (NATType, error) {
	t := NATType(strings.ToLower(strings.TrimSpace(s)))
	if t.Valid() {
		return t, nil
	}
	return "", fmt.Errorf("%w %q: want one of %s", ErrUnknownNATType, s, typeList())
}

// Valid reports whether t is one of the types in [AllTypes].
func (t NATType) Valid() bool {
	for _, k := range AllTypes() {
		if t == k {
			return true
		}
	}
	return false
}

// String returns the type's name, as accepted by [ParseNATType].
func (t NATType) String() string { return string(t) }

// hosts returns how many hosts a site of this type has.
func (t NATType) hosts() int {
	if t == SameNAT {
		return 2
	}
	return 1
}

func typeList() string {
	names := make([]string, 0, len(AllTypes()))
	for _, t := range AllTypes() {
		names = append(names, string(t))
	}
	return strings.Join(names, ", ")
}
