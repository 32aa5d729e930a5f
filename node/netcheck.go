package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/keymesh/keymesh/internal/netcheck"
	"github.com/keymesh/keymesh/internal/relayclient"
)

// NetcheckReport is what Netcheck found: whether UDP works, the public
// address and whether the port was kept, the NAT's mapping and filtering
// behaviour (RFC 5780 terms) and the round trip to each relay.
type NetcheckReport = netcheck.Report

// Netcheck measures the network this node sits in, from a socket of its
// own: RFC 5780 tests against the rendezvous server (which needs a second
// address, its --alt-listen, to tell the behaviours apart), and a ticket
// bind to each relay the server advertises, timed.
func (n *Node) Netcheck(ctx context.Context) (NetcheckReport, error) {
	if n.sock.Tunneled() {
		return NetcheckReport{Mapping: netcheck.Unknown, Filtering: netcheck.Unknown}, nil
	}
	local := "0.0.0.0:0"
	if n.srv.Addr().Is6() {
		local = "[::]:0"
	}
	if a := n.sock.LocalAddrPort().Addr(); a.IsValid() && !a.IsUnspecified() {
		local = netip.AddrPortFrom(a, 0).String()
	}
	ua, err := net.ResolveUDPAddr("udp", local)
	if err != nil {
		return NetcheckReport{}, fmt.Errorf("node: netcheck: %w", err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return NetcheckReport{}, fmt.Errorf("node: netcheck: %w", err)
	}
	defer conn.Close()
	rep, err := (&netcheck.Client{Conn: conn}).Check(ctx, n.srv)
	if err != nil {
		return rep, fmt.Errorf("node: netcheck: %w", err)
	}
	if !rep.UDP {
		return rep, nil
	}
	for _, r := range n.rz.Status().Relays {
		rr := netcheck.RelayRTT{Addr: r}
		ra, err := net.ResolveUDPAddr("udp", r)
		if err != nil {
			rr.Error = err.Error()
			rep.Relays = append(rep.Relays, rr)
			continue
		}
		bctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		start := time.Now()
		_, err = relayclient.Bind(bctx, conn, ra, n.id)
		cancel()
		if err != nil {
			rr.Error = err.Error()
		} else {
			rr.RTTms = float64(time.Since(start).Microseconds()) / 1000
		}
		rep.Relays = append(rep.Relays, rr)
	}
	return rep, nil
}
