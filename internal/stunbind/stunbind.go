// Package stunbind is the peer's one STUN Binding codec (RFC 8489): it builds
// Binding requests, optionally with RFC 5780's CHANGE-REQUEST and PADDING,
// and parses Binding success responses: the mapped address
// (XOR-MAPPED-ADDRESS, or the older MAPPED-ADDRESS) and RFC 5780's
// OTHER-ADDRESS and RESPONSE-ORIGIN. The STUN client of internal/nat and the
// NAT discovery client of internal/netcheck both use it; the servers'
// answering side stays with each server.
package stunbind

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/pion/stun/v4"
)

// TxID is a STUN transaction ID.
type TxID = [stun.TransactionIDSize]byte

// RequestOptions are the optional parts of a Binding request.
type RequestOptions struct {
	// Change, when not zero, adds CHANGE-REQUEST with these flags (RFC 5780
	// section 7.2: 0x04 change IP, 0x02 change port).
	Change byte
	// Padding, when positive, adds PADDING of this many bytes (RFC 5780
	// section 7.6), so that the answer need not be larger than the request.
	Padding int
	// Fingerprint adds FINGERPRINT.
	Fingerprint bool
}

// Request returns a new Binding request and its (random) transaction ID.
func Request(o RequestOptions) ([]byte, TxID, error) {
	setters := []stun.Setter{stun.TransactionID, stun.BindingRequest}
	if o.Change != 0 {
		setters = append(setters, stun.RawAttribute{Type: stun.AttrChangeRequest, Value: []byte{0, 0, 0, o.Change}})
	}
	if o.Padding > 0 {
		setters = append(setters, stun.RawAttribute{Type: stun.AttrPadding, Value: make([]byte, o.Padding)})
	}
	if o.Fingerprint {
		setters = append(setters, stun.Fingerprint)
	}
	m, err := stun.Build(setters...)
	if err != nil {
		return nil, TxID{}, fmt.Errorf("build STUN request: %w", err)
	}
	return m.Raw, m.TransactionID, nil
}

// Response is a parsed Binding success response.
type Response struct {
	Tx TxID
	// Mapped is the address the server saw the request come from.
	Mapped netip.AddrPort
	// XOR says Mapped came from XOR-MAPPED-ADDRESS, not MAPPED-ADDRESS.
	XOR bool
	// Other is RFC 5780's OTHER-ADDRESS, Origin its RESPONSE-ORIGIN; each
	// is the zero value when absent or not a valid address.
	Other, Origin netip.AddrPort
}

// Parse decodes a STUN Binding success response. On ErrNotResponse and
// ErrNoMappedAddr the returned Response holds the transaction ID.
func Parse(b []byte) (Response, error) {
	var r Response
	if !stun.IsMessage(b) {
		return r, ErrNotSTUN
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return r, fmt.Errorf("%w: %v", ErrNotSTUN, err)
	}
	r.Tx = m.TransactionID
	if m.Type != stun.BindingSuccess {
		return r, ErrNotResponse
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(m); err == nil {
		r.Mapped, r.XOR = addrPort(xor.IP, xor.Port), true
	} else {
		var mapped stun.MappedAddress
		if err := mapped.GetFrom(m); err == nil {
			r.Mapped = addrPort(mapped.IP, mapped.Port)
		}
	}
	if !r.Mapped.IsValid() {
		return r, ErrNoMappedAddr
	}
	var oa stun.OtherAddress
	if oa.GetFrom(m) == nil {
		r.Other = addrPort(oa.IP, oa.Port)
	}
	var ro stun.ResponseOrigin
	if ro.GetFrom(m) == nil {
		r.Origin = addrPort(ro.IP, ro.Port)
	}
	return r, nil
}

// addrPort returns ip and port as an address, or the zero value when they
// are not a valid address and a port other than 0.
func addrPort(ip net.IP, port int) netip.AddrPort {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || port <= 0 || port > 65535 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}
