// Package netcheck discovers how the NAT in front of a peer behaves, after
// RFC 5780: whether UDP works at all, the public address and whether the NAT
// kept the local port, its mapping behaviour (endpoint-independent,
// address-dependent or address-and-port-dependent) and its filtering
// behaviour. Peers use the answer to choose a punching strategy.
//
// The server half, Responder, answers STUN Binding requests with
// CHANGE-REQUEST from a rendezvous server's four sockets (two addresses times
// two ports), adding OTHER-ADDRESS and RESPONSE-ORIGIN.
package netcheck

import (
	"errors"
	"net/netip"
)

// Mapping and filtering behaviours, as reported in JSON.
const (
	NoNAT                   = "none"                       // the public address is the local one
	EndpointIndependent     = "endpoint-independent"       // one mapping (or filter) for every destination
	AddressDependent        = "address-dependent"          // a new mapping per destination address
	AddressAndPortDependent = "address-and-port-dependent" // a new mapping per destination address and port
	Unknown                 = "unknown"                    // not measurable (no UDP, or no alternate server address)
)

// CHANGE-REQUEST flags (RFC 5780 section 7.2).
const (
	changeIP   = 0x04
	changePort = 0x02
)

// Errors.
var (
	ErrNotBinding = errors.New("not a STUN binding request")
	ErrNoAnswer   = errors.New("no STUN answer")
	ErrTooSmall   = errors.New("request smaller than its answer")
)

// Report is what a check found.
type Report struct {
	// UDP is whether any STUN answer came back at all.
	UDP bool `json:"udp"`
	// Local is the socket's own address.
	Local netip.AddrPort `json:"local"`
	// Reflexive is the address the server saw (the NAT's mapping).
	Reflexive netip.AddrPort `json:"public"`
	// PortPreserved is whether the NAT kept the local port.
	PortPreserved bool `json:"port_preserved"`
	// Mapping and Filtering are the NAT's behaviours (constants above).
	Mapping   string `json:"mapping"`
	Filtering string `json:"filtering"`
	// Relays is the round-trip time to each advertised relay.
	Relays []RelayRTT `json:"relays,omitempty"`
}

// RelayRTT is the measured latency to one relay.
type RelayRTT struct {
	Addr  string  `json:"addr"`
	RTTms float64 `json:"rtt_ms"`
	Error string  `json:"error,omitempty"`
}

// Hard reports whether the NAT maps each destination to a new port, the case
// that needs birthday-paradox punching against an easy peer.
func (r Report) Hard() bool {
	return r.Mapping == AddressDependent || r.Mapping == AddressAndPortDependent
}
