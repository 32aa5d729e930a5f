package policy

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestAllowPacketOtherProtocols: a rule with ports admits TCP and UDP to
// those ports and ICMPv6, nothing else: an IPv6 extension header (hop-by-
// hop 0, routing 43, fragment 44, destination options 60) in front of a TCP
// segment, or another protocol with ports (DCCP 33, SCTP 132), would
// otherwise reach every port of a peer the rules allow only port 80. A
// rule without ports admits every protocol.
func TestAllowPacketOtherProtocols(t *testing.T) {
	a, b := peer(t, 1), peer(t, 3)
	rules, err := ParseRules([]string{a.String() + ":80/tcp", b.String()})
	if err != nil {
		t.Fatal(err)
	}
	p := New(Config{Rules: rules, Logger: slog.New(slog.DiscardHandler)})
	me := netip.MustParseAddr("fd4b::1")
	srcA := netip.AddrPortFrom(a.OverlayAddr(), 40000)
	srcB := netip.AddrPortFrom(b.OverlayAddr(), 40000)
	for _, proto := range []uint8{0, 33, 43, 44, 60, 132} {
		if p.AllowPacket(srcA, netip.AddrPortFrom(me, 22), proto) {
			t.Errorf("protocol %d from a peer allowed only 80/tcp passed", proto)
		}
		if !p.AllowPacket(srcB, netip.AddrPortFrom(me, 22), proto) {
			t.Errorf("protocol %d from a peer allowed every port was refused", proto)
		}
	}
	if !p.AllowPacket(srcA, netip.AddrPortFrom(me, 0), 58) {
		t.Error("ICMPv6 from a peer some rule admits was refused")
	}
}

// TestAllowPacket: the overlay's packets follow the same rules as streams;
// a refused flow is logged and counted once however many packets it sends,
// again once FlowMemory has passed; the table of refused flows is bounded.
func TestAllowPacket(t *testing.T) {
	a, stranger := peer(t, 1), peer(t, 2)
	rules, err := ParseRules([]string{a.String() + ":80/tcp,53/udp"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	now := time.Unix(1e9, 0)
	p := New(Config{Rules: rules, Logger: slog.New(slog.NewTextHandler(&buf, nil)), Now: func() time.Time { return now }})
	var hook func(src, dst netip.AddrPort, proto uint8) bool = p.AllowPacket // overlay.Policy's shape
	me := netip.MustParseAddr("fd4b::1")
	srcA := netip.AddrPortFrom(a.OverlayAddr(), 40000)
	srcS := netip.AddrPortFrom(stranger.OverlayAddr(), 40000)
	to := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(me, port) }

	for _, tc := range []struct {
		src   netip.AddrPort
		dst   netip.AddrPort
		proto uint8
		want  bool
	}{
		{srcA, to(80), ipProtoTCP, true},
		{srcA, to(53), ipProtoUDP, true},
		{srcA, to(80), ipProtoUDP, false},
		{srcA, to(22), ipProtoTCP, false},
		{srcA, to(0), 58, true}, // ICMPv6 from an admitted peer
		{srcS, to(0), 58, false},
		{srcS, to(80), ipProtoTCP, false},
	} {
		if got := hook(tc.src, tc.dst, tc.proto); got != tc.want {
			t.Errorf("AllowPacket(%s, %s, %d) = %v, want %v", tc.src, tc.dst, tc.proto, got, tc.want)
		}
	}
	if got := p.Refused(KindTCP) + p.Refused(KindUDP) + p.Refused(KindSession); got != 4 {
		t.Fatalf("counted %d refusals, want 4", got)
	}

	// One flow, many packets: one line, one count.
	buf.Reset()
	before := p.Refused(KindTCP)
	for range 50 {
		hook(srcA, to(23), ipProtoTCP)
	}
	if got := p.Refused(KindTCP) - before; got != 1 {
		t.Errorf("50 packets of one refused flow counted %d times, want 1", got)
	}
	if n := strings.Count(buf.String(), "policy refused a flow"); n != 1 {
		t.Errorf("50 packets of one refused flow logged %d lines, want 1:\n%s", n, buf.String())
	}
	if want := "kind=tcp peer=" + a.String() + " port=23"; !strings.Contains(buf.String(), want) {
		t.Errorf("log %q, want %q", buf.String(), want)
	}
	now = now.Add(FlowMemory)
	hook(srcA, to(23), ipProtoTCP)
	if got := p.Refused(KindTCP) - before; got != 2 {
		t.Errorf("after FlowMemory the flow counted %d times in all, want 2", got)
	}

	// Distinct flows beyond MaxFlows: the table stays bounded.
	for i := range MaxFlows + 100 {
		hook(netip.AddrPortFrom(stranger.OverlayAddr(), uint16(i)), to(9), ipProtoUDP)
	}
	p.mu.Lock()
	n := len(p.refusedFlows)
	p.mu.Unlock()
	if n > MaxFlows {
		t.Errorf("%d refused flows remembered, want at most %d", n, MaxFlows)
	}

	// --allow-any and a wildcard rule.
	if !New(Config{AllowAny: true}).AllowPacket(srcS, to(22), ipProtoTCP) {
		t.Error("--allow-any refused a packet")
	}
	wr, _ := ParseRules([]string{"*:443/tcp"})
	w := New(Config{Rules: wr})
	if !w.AllowPacket(srcS, to(443), ipProtoTCP) || w.AllowPacket(srcS, to(80), ipProtoTCP) {
		t.Error("a rule for * does not admit exactly port 443/tcp")
	}
}
