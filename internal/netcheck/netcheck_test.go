package netcheck

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/keymesh/keymesh/internal/stunbind"
	"github.com/keymesh/keymesh/internal/testutil/ci"
)

// startResponder opens the four sockets of an RFC 5780 server on loopback
// (127.0.0.1 and 127.0.0.2, two ports each) and serves them.
func startResponder(t *testing.T) (primary, alt netip.AddrPort) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	listen := func(a string) *net.UDPConn {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(a)))
		if err != nil {
			ci.Skipf(t, "cannot listen on %s: %v", a, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	p1 := listen("127.0.0.1:0")
	primary = p1.LocalAddr().(*net.UDPAddr).AddrPort()
	a1 := listen("127.0.0.2:0")
	alt = a1.LocalAddr().(*net.UDPAddr).AddrPort()
	p2 := listen(netip.AddrPortFrom(primary.Addr(), alt.Port()).String())
	a2 := listen(netip.AddrPortFrom(alt.Addr(), primary.Port()).String())
	conns := map[netip.AddrPort]net.PacketConn{primary: p1, alt: a1}
	conns[netip.AddrPortFrom(primary.Addr(), alt.Port())] = p2
	conns[netip.AddrPortFrom(alt.Addr(), primary.Port())] = a2
	r := NewResponder(primary, alt, conns)
	for a, c := range conns {
		go r.Serve(ctx, c, a)
	}
	return primary, alt
}

func TestCheckWithoutNAT(t *testing.T) {
	primary, _ := startResponder(t)
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := (&Client{Conn: c}).Check(ctx, primary)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.UDP || rep.Reflexive != c.LocalAddr().(*net.UDPAddr).AddrPort() || !rep.PortPreserved || rep.Mapping != NoNAT {
		t.Fatalf("report %+v", rep)
	}
}

func TestChangeRequestAnsweredFromOtherSocket(t *testing.T) {
	primary, alt := startResponder(t)
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		change byte
		want   netip.AddrPort
	}{
		{0, primary},
		{changePort, netip.AddrPortFrom(primary.Addr(), alt.Port())},
		{changeIP, netip.AddrPortFrom(alt.Addr(), primary.Port())},
		{changeIP | changePort, alt},
	} {
		req, _ := stun.Build(stun.TransactionID, stun.BindingRequest,
			stun.RawAttribute{Type: stun.AttrChangeRequest, Value: []byte{0, 0, 0, tc.change}},
			stun.RawAttribute{Type: stun.AttrPadding, Value: make([]byte, 48)})
		if _, err := c.WriteTo(req.Raw, net.UDPAddrFromAddrPort(primary)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 1500)
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("change %#x: %v", tc.change, err)
		}
		if got := from.AddrPort(); netip.AddrPortFrom(got.Addr().Unmap(), got.Port()) != tc.want {
			t.Errorf("change %#x: answered from %v, want %v", tc.change, got, tc.want)
		}
		r, err := stunbind.Parse(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		if r.Origin != tc.want {
			t.Errorf("change %#x: RESPONSE-ORIGIN %v, want %v", tc.change, r.Origin, tc.want)
		}
		if !r.Other.IsValid() {
			t.Errorf("no OTHER-ADDRESS")
		}
	}
}

func TestAnswerDoesNotAmplify(t *testing.T) {
	r := NewResponder(netip.MustParseAddrPort("203.0.113.1:3478"), netip.MustParseAddrPort("198.51.100.1:3479"), nil)
	plain, _ := stun.Build(stun.TransactionID, stun.BindingRequest)
	resp, _, err := r.Answer(plain.Raw, netip.MustParseAddrPort("203.0.113.9:5000"), netip.MustParseAddrPort("203.0.113.1:3478"))
	if err != nil {
		t.Fatal(err)
	}
	// A bare 20-byte request gets only XOR-MAPPED-ADDRESS: 32 bytes, as from
	// any STUN server; the RFC 5780 attributes need a padded request.
	if len(resp) > 32 {
		t.Fatalf("answer of %d bytes to a %d-byte request", len(resp), len(plain.Raw))
	}
}

// FuzzAnswer feeds arbitrary packets to the responder: no panic, and never
// an answer more than 12 bytes larger than the request (XOR-MAPPED-ADDRESS).
func FuzzAnswer(f *testing.F) {
	r := NewResponder(netip.MustParseAddrPort("203.0.113.1:3478"), netip.MustParseAddrPort("198.51.100.1:3479"), nil)
	plain, _ := stun.Build(stun.TransactionID, stun.BindingRequest)
	f.Add(plain.Raw)
	padded, _ := stun.Build(stun.TransactionID, stun.BindingRequest, stun.RawAttribute{Type: stun.AttrPadding, Value: make([]byte, 48)})
	f.Add(padded.Raw)
	f.Add([]byte{0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, _, err := r.Answer(b, netip.MustParseAddrPort("[2001:db8::1]:5000"), netip.MustParseAddrPort("203.0.113.1:3478"))
		if err == nil && len(resp) > len(b)+24 {
			t.Fatalf("answer of %d bytes to %d", len(resp), len(b))
		}
	})
}

// FuzzAnswerLimited is FuzzAnswer for a responder whose answers are bounded
// per source (LimitPerSource): the RFC 5780 attributes then go to any
// Binding request, and an answer is never more than a header and three
// IPv6 address attributes, whatever the request.
func FuzzAnswerLimited(f *testing.F) {
	r := NewResponder(netip.MustParseAddrPort("203.0.113.1:3478"), netip.MustParseAddrPort("198.51.100.1:3479"), nil)
	r.LimitPerSource(func(netip.Addr) bool { return true })
	plain, _ := stun.Build(stun.TransactionID, stun.BindingRequest)
	f.Add(plain.Raw)
	change, _ := stun.Build(stun.TransactionID, stun.BindingRequest, stun.RawAttribute{Type: stun.AttrChangeRequest, Value: []byte{0, 0, 0, 6}})
	f.Add(change.Raw)
	f.Add([]byte{0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, _, err := r.Answer(b, netip.MustParseAddrPort("[2001:db8::1]:5000"), netip.MustParseAddrPort("203.0.113.1:3478"))
		if err == nil && len(resp) > 20+3*24 {
			t.Fatalf("answer of %d bytes to %d", len(resp), len(b))
		}
	})
}
