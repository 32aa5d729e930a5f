package netcheck

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/internal/testutil/ci"
)

// TestLabNetcheck runs the RFC 5780 check from behind every NAT type of the
// lab, against a responder on a lab server with two addresses, and asserts
// the behaviour the lab built.
func TestLabNetcheck(t *testing.T) {
	ci.NeedRoot(t, "builds network namespaces and NATs")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	lab, err := natlab.New(ctx, natlab.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	srv, err := lab.AddServer(ctx, "stun")
	if err != nil {
		t.Fatal(err)
	}
	primary := netip.AddrPortFrom(srv.Addrs[0], 3478)
	alt := netip.AddrPortFrom(srv.Addrs[1], 3479)
	conns := map[netip.AddrPort]net.PacketConn{}
	for _, a := range []netip.AddrPort{primary, alt, netip.AddrPortFrom(primary.Addr(), alt.Port()), netip.AddrPortFrom(alt.Addr(), primary.Port())} {
		c, err := srv.ListenUDP(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[a] = c
	}
	r := NewResponder(primary, alt, conns)
	for a, c := range conns {
		go r.Serve(ctx, c, a)
	}

	type want struct {
		udp                bool
		mapping, filtering string
		preserved          bool
	}
	cases := map[natlab.NATType]want{
		natlab.Public:         {true, NoNAT, NoNAT, true},
		natlab.FullCone:       {true, EndpointIndependent, EndpointIndependent, true},
		natlab.PortRestricted: {true, EndpointIndependent, AddressAndPortDependent, true},
		natlab.Symmetric:      {true, AddressAndPortDependent, AddressAndPortDependent, false},
		natlab.Double:         {true, EndpointIndependent, AddressAndPortDependent, true},
		natlab.UDPBlocked:     {false, Unknown, Unknown, false},
		natlab.SameNAT:        {true, EndpointIndependent, AddressAndPortDependent, true},
	}
	for _, typ := range natlab.AllTypes() {
		w := cases[typ]
		site, err := lab.AddSite(ctx, string(typ), typ)
		if err != nil {
			t.Fatal(err)
		}
		c, err := site.Host().ListenUDP(ctx, netip.AddrPortFrom(netip.IPv4Unspecified(), 40000))
		if err != nil {
			t.Fatal(err)
		}
		rep, err := (&Client{Conn: c, Timeout: 300 * time.Millisecond, Tries: 2, LocalIP: site.Host().Addr}).Check(ctx, primary)
		c.Close()
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		t.Logf("%s: %+v", typ, rep)
		if rep.UDP != w.udp || rep.Mapping != w.mapping || rep.Filtering != w.filtering {
			t.Errorf("%s: udp=%v mapping=%s filtering=%s, want udp=%v mapping=%s filtering=%s", typ, rep.UDP, rep.Mapping, rep.Filtering, w.udp, w.mapping, w.filtering)
		}
		if w.udp && rep.PortPreserved != w.preserved {
			t.Errorf("%s: port preserved %v, want %v", typ, rep.PortPreserved, w.preserved)
		}
		if w.udp && rep.Reflexive.Addr() != site.PublicAddr {
			t.Errorf("%s: public address %v, want %v", typ, rep.Reflexive, site.PublicAddr)
		}
	}
}
