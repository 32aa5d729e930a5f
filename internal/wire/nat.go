package wire

import "fmt"

// NAT is a NAT's mapping behaviour as a peer measures and reports it
// (RFC 4787 / RFC 5780 terms): one byte on the wire, in Register, PeerInfo
// and Report.
type NAT byte

// NAT mapping behaviours.
const (
	NATUnknown        NAT = 0
	NATNone           NAT = 1 // public address, no NAT
	NATEndpointIndep  NAT = 2 // endpoint-independent mapping ("easy")
	NATAddrDependent  NAT = 3 // address-dependent mapping ("hard")
	NATAddrPortDepend NAT = 4 // address-and-port-dependent mapping ("hard")
	NATUDPBlocked     NAT = 5 // no UDP at all
)

// maxNAT is the largest NAT behaviour.
const maxNAT = NATUDPBlocked

var natNames = [...]string{
	NATUnknown:        "unknown",
	NATNone:           "none",
	NATEndpointIndep:  "endpoint_independent",
	NATAddrDependent:  "address_dependent",
	NATAddrPortDepend: "address_port_dependent",
	NATUDPBlocked:     "udp_blocked",
}

// String is the behaviour's name, as metrics label it (local_nat,
// remote_nat): "endpoint_independent", "udp_blocked", ...
func (n NAT) String() string {
	if n <= maxNAT {
		return natNames[n]
	}
	return fmt.Sprintf("nat(%d)", byte(n))
}
