package netcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/pion/stun/v4"
)

// Responder answers STUN Binding requests, RFC 5780 style, for a server
// listening on up to four sockets: primary address and port, the primary
// address with the alternate port, the alternate address with the primary
// port, and the alternate address and port.
//
// Answers never amplify beyond plain STUN: a request gets XOR-MAPPED-ADDRESS
// (a 32-byte answer to the usual 20-byte request, as every STUN server does),
// and OTHER-ADDRESS and RESPONSE-ORIGIN only when the request is at least as
// large as the answer would be (netcheck's client pads its requests), or
// always once LimitPerSource bounds the answers each source gets.
type Responder struct {
	primary, alt netip.AddrPort
	conns        map[netip.AddrPort]net.PacketConn
	allow        func(netip.Addr) bool
}

// LimitPerSource makes Send (so Serve) ask allow before answering each
// request and drop it when allow says no. Since each source's answers are
// then bounded, OTHER-ADDRESS and RESPONSE-ORIGIN go to unpadded requests
// too, as standard RFC 5780 clients (coturn's turnutils_natdiscovery) need.
// Answer does not call allow: a caller of Answer asks it itself. Call it
// before Serve.
func (r *Responder) LimitPerSource(allow func(netip.Addr) bool) { r.allow = allow }

// NewResponder makes a responder. conns maps each local socket address to its
// socket; alt may be the zero value when the server has no second address,
// and then CHANGE-REQUEST is refused and no OTHER-ADDRESS is sent.
func NewResponder(primary, alt netip.AddrPort, conns map[netip.AddrPort]net.PacketConn) *Responder {
	m := make(map[netip.AddrPort]net.PacketConn, len(conns))
	for k, v := range conns {
		m[norm(k)] = v
	}
	return &Responder{primary: norm(primary), alt: norm(alt), conns: m}
}

func norm(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// Answer builds the answer to req, which arrived from from on the socket at
// local. It returns the answer and the local socket address to send it
// from (another one when the request asked for a change).
func (r *Responder) Answer(req []byte, from, local netip.AddrPort) ([]byte, netip.AddrPort, error) {
	local = norm(local)
	m := &stun.Message{Raw: append([]byte(nil), req...)}
	if err := m.Decode(); err != nil {
		return nil, local, fmt.Errorf("%w: %v", ErrNotBinding, err)
	}
	if m.Type != stun.BindingRequest {
		return nil, local, fmt.Errorf("%w: type %v", ErrNotBinding, m.Type)
	}
	src := local
	if cr, err := m.Get(stun.AttrChangeRequest); err == nil && len(cr) == 4 {
		flags := cr[3]
		if flags&(changeIP|changePort) != 0 {
			if !r.alt.IsValid() {
				return nil, local, errors.New("CHANGE-REQUEST without an alternate address")
			}
			ip, port := local.Addr(), local.Port()
			if flags&changeIP != 0 {
				ip = r.other(ip)
			}
			if flags&changePort != 0 {
				port = r.otherPort(port)
			}
			src = netip.AddrPortFrom(ip, port)
			if _, ok := r.conns[src]; !ok {
				return nil, local, fmt.Errorf("no socket at %v to answer a change request from", src)
			}
		}
	}
	setters := []stun.Setter{
		stun.NewTransactionIDSetter(m.TransactionID),
		stun.BindingSuccess,
		&stun.XORMappedAddress{IP: from.Addr().AsSlice(), Port: int(from.Port())},
	}
	base, err := stun.Build(setters...)
	if err != nil {
		return nil, local, fmt.Errorf("build answer: %w", err)
	}
	if r.alt.IsValid() && (r.allow != nil || len(req) >= len(base.Raw)+24) {
		other := netip.AddrPortFrom(r.other(local.Addr()), r.otherPort(local.Port()))
		oa := stun.OtherAddress{IP: other.Addr().AsSlice(), Port: int(other.Port())}
		ro := stun.ResponseOrigin{IP: src.Addr().AsSlice(), Port: int(src.Port())}
		setters = append(setters, &oa, &ro)
		full, err := stun.Build(setters...)
		if err != nil {
			return nil, local, fmt.Errorf("build answer: %w", err)
		}
		return full.Raw, src, nil
	}
	return base.Raw, src, nil
}

func (r *Responder) other(ip netip.Addr) netip.Addr {
	if ip == r.primary.Addr() {
		return r.alt.Addr()
	}
	return r.primary.Addr()
}

func (r *Responder) otherPort(p uint16) uint16 {
	if p == r.primary.Port() {
		return r.alt.Port()
	}
	return r.primary.Port()
}

// SendAnswer sends resp to to from the socket at src.
func (r *Responder) SendAnswer(resp []byte, src, to netip.AddrPort) bool {
	c, ok := r.conns[norm(src)]
	if !ok {
		return false
	}
	_, err := c.WriteTo(resp, net.UDPAddrFromAddrPort(to))
	return err == nil
}

// Send answers req on the right socket. It returns false when it sent
// nothing.
func (r *Responder) Send(req []byte, from, local netip.AddrPort) bool {
	if r.allow != nil && !r.allow(from.Addr()) {
		return false
	}
	resp, src, err := r.Answer(req, from, local)
	if err != nil {
		return false
	}
	c, ok := r.conns[src]
	if !ok {
		return false
	}
	_, err = c.WriteTo(resp, net.UDPAddrFromAddrPort(from))
	return err == nil
}

// Serve answers STUN on conn, whose address is local, until ctx ends or the
// socket closes. Use it for the alternate sockets; the rendezvous's primary
// socket hands its STUN packets to Send itself.
func (r *Responder) Serve(ctx context.Context, conn net.PacketConn, local netip.AddrPort) error {
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	buf := make([]byte, 1500)
	for {
		n, addr, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("netcheck responder: %w", err)
		}
		ua, ok := addr.(*net.UDPAddr)
		if !ok {
			continue
		}
		r.Send(buf[:n], ua.AddrPort(), local)
	}
}
