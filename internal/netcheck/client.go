package netcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/keymesh/keymesh/internal/exchange"
	"github.com/keymesh/keymesh/internal/stunbind"
)

// Client runs the RFC 5780 tests over one UDP socket. Use a socket of its
// own: the NAT treats every socket of a host alike, and the answers must not
// be mistaken for another protocol's packets.
type Client struct {
	// Conn is the socket to test from.
	Conn net.PacketConn
	// Timeout is how long to wait for one answer (default 400 ms); each
	// request is sent Tries times (default 3).
	Timeout time.Duration
	Tries   int
	// LocalIP is the socket's own address when it is bound to the
	// unspecified address; by default the route toward the server says.
	LocalIP netip.Addr
}

type answer struct {
	mapped, other, origin netip.AddrPort
}

// Check runs the tests against a server that has an alternate address.
func (c *Client) Check(ctx context.Context, server netip.AddrPort) (Report, error) {
	rep := Report{Mapping: Unknown, Filtering: Unknown}
	if ua, ok := c.Conn.LocalAddr().(*net.UDPAddr); ok {
		rep.Local = ua.AddrPort()
	}
	if rep.Local.Addr().IsUnspecified() && c.LocalIP.IsValid() {
		rep.Local = netip.AddrPortFrom(c.LocalIP, rep.Local.Port())
	} else if rep.Local.Addr().IsUnspecified() {
		if ip, err := routeTo(server); err == nil {
			rep.Local = netip.AddrPortFrom(ip, rep.Local.Port())
		}
	}
	// Test I: the mapping toward the primary address.
	a1, err := c.request(ctx, server, 0)
	if err != nil {
		if errors.Is(err, ErrNoAnswer) {
			return rep, nil // no UDP
		}
		return rep, err
	}
	rep.UDP = true
	rep.Reflexive = a1.mapped
	rep.PortPreserved = a1.mapped.Port() == rep.Local.Port()
	if a1.mapped == rep.Local {
		rep.Mapping, rep.Filtering = NoNAT, NoNAT
	}
	if !a1.other.IsValid() {
		return rep, nil // the server has no alternate address: behaviour unknown
	}
	if rep.Mapping != NoNAT {
		// Test II: alternate address, primary port.
		a2, err := c.request(ctx, netip.AddrPortFrom(a1.other.Addr(), server.Port()), 0)
		switch {
		case err != nil:
			rep.Mapping = Unknown
		case a2.mapped == a1.mapped:
			rep.Mapping = EndpointIndependent
		default:
			// Test III: alternate address and port.
			a3, err := c.request(ctx, a1.other, 0)
			switch {
			case err != nil:
				rep.Mapping = Unknown
			case a3.mapped == a2.mapped:
				rep.Mapping = AddressDependent
			default:
				rep.Mapping = AddressAndPortDependent
			}
		}
		// Filtering, Test II: ask for an answer from the other address and port.
		if _, err := c.request(ctx, server, changeIP|changePort); err == nil {
			rep.Filtering = EndpointIndependent
		} else if _, err := c.request(ctx, server, changePort); err == nil {
			rep.Filtering = AddressDependent
		} else {
			rep.Filtering = AddressAndPortDependent
		}
	}
	return rep, nil
}

// Mapped asks server for this socket's public address (plain STUN).
func (c *Client) Mapped(ctx context.Context, server netip.AddrPort) (netip.AddrPort, error) {
	a, err := c.request(ctx, server, 0)
	return a.mapped, err
}

// request sends one Binding request (padded so that the server may add
// OTHER-ADDRESS and RESPONSE-ORIGIN) and waits for its answer.
func (c *Client) request(ctx context.Context, to netip.AddrPort, change byte) (answer, error) {
	timeout, tries := c.Timeout, c.Tries
	if timeout <= 0 {
		timeout = 400 * time.Millisecond
	}
	if tries <= 0 {
		tries = 3
	}
	// PADDING (RFC 5780 section 7.6) so the answer is not larger than us.
	req, tx, err := stunbind.Request(stunbind.RequestOptions{Change: change, Padding: 48})
	if err != nil {
		return answer{}, fmt.Errorf("build request: %w", err)
	}
	var a answer
	err = exchange.Run(ctx, exchange.Config{
		Conn: c.Conn, To: net.UDPAddrFromAddrPort(to), Retry: timeout, Tries: tries,
		Request: func() []byte { return req },
		Answer: func(b []byte, _ net.Addr) (exchange.Verdict, error) {
			r, err := stunbind.Parse(b)
			if r.Tx != tx || errors.Is(err, stunbind.ErrNotSTUN) || errors.Is(err, stunbind.ErrNotResponse) {
				return exchange.Skip, nil
			}
			if err != nil || !r.XOR {
				return exchange.Skip, fmt.Errorf("answer from %v without XOR-MAPPED-ADDRESS: %w", to, stunbind.ErrNoMappedAddr)
			}
			a = answer{mapped: r.Mapped, other: r.Other, origin: r.Origin}
			return exchange.Done, nil
		},
	})
	switch {
	case err == nil:
		return a, nil
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		if ctx.Err() != nil {
			return answer{}, ctx.Err()
		}
		return answer{}, context.DeadlineExceeded
	case errors.Is(err, exchange.ErrNoAnswer):
		return answer{}, fmt.Errorf("%w from %v", ErrNoAnswer, to)
	}
	return answer{}, err
}

// routeTo finds the local address the kernel would use toward dst, without
// sending anything.
func routeTo(dst netip.AddrPort) (netip.Addr, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}
