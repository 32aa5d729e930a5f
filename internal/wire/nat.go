package wire

// NAT mapping behaviours a peer reports (RFC 4787 / RFC 5780 terms).
const (
	NATUnknown        byte = 0
	NATNone           byte = 1 // public address, no NAT
	NATEndpointIndep  byte = 2 // endpoint-independent mapping ("easy")
	NATAddrDependent  byte = 3 // address-dependent mapping ("hard")
	NATAddrPortDepend byte = 4 // address-and-port-dependent mapping ("hard")
	NATUDPBlocked     byte = 5 // no UDP at all
)
