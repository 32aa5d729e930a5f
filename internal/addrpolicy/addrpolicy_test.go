package addrpolicy

import (
	"errors"
	"net/netip"
	"testing"
)

func TestDefaultRefusals(t *testing.T) {
	own := netip.MustParseAddr("203.0.113.5")
	p := New(nil, []netip.Addr{own})
	refused := []string{
		"127.0.0.1", "127.255.0.9", "10.0.0.1", "172.16.3.4", "192.168.1.1",
		"169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.251", "255.255.255.255",
		"::1", "::", "fe80::1", "fd00::1", "ff02::1",
		"::ffff:127.0.0.1", "::ffff:169.254.169.254", // IPv4-mapped
		"64:ff9b::a9fe:a9fe", // NAT64 of 169.254.169.254
		"2002:0a00:0001::1",  // 6to4 of 10.0.0.1
		"203.0.113.5",        // the server itself
		"::ffff:203.0.113.5",
		// Forms that carry an IPv4 address a host or its gateway may
		// deliver to (a sit tunnel's ::/96 route, SIIT, a Teredo relay).
		"::127.0.0.1", "::169.254.169.254", "::10.0.0.1", "::203.0.113.5", // IPv4-compatible
		"::ffff:0:127.0.0.1", "::ffff:0:169.254.169.254", // SIIT, RFC 2765
		"2001:0:cb00:7105::f5ff:fffe", "2001:0:4136:e378:8000:63bf:f5ff:fffe", // Teredo clients 10.0.0.1
		"2001:0:cb00:7105::34ff:8efa", // Teredo client 203.0.113.5, the server itself
	}
	for _, s := range refused {
		if err := p.Check(netip.MustParseAddr(s)); !errors.Is(err, ErrDenied) {
			t.Errorf("%s: got %v, want refused", s, err)
		}
	}
	allowed := []string{"203.0.113.9", "198.51.100.1", "8.8.8.8", "2001:4860:4860::8888", "64:ff9b::808:808",
		"::8.8.8.8", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:db9::1"}
	for _, s := range allowed {
		if err := p.Check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("%s: %v, want allowed", s, err)
		}
	}
	if (*Policy)(nil).Allowed(netip.MustParseAddr("10.1.1.1")) {
		t.Error("nil policy allowed a private address")
	}
	if (*Policy)(nil).Allowed(netip.Addr{}) {
		t.Error("invalid address allowed")
	}
}

func TestOperatorAllowWins(t *testing.T) {
	allow, err := ParsePrefixes("10.1.0.0/16, 127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	p := New(allow, nil)
	for _, s := range []string{"10.1.2.3", "127.0.0.1", "::ffff:10.1.9.9"} {
		if err := p.Check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("%s: %v, want allowed by the operator", s, err)
		}
	}
	for _, s := range []string{"10.2.0.1", "127.0.0.2", "169.254.169.254"} {
		if p.Allowed(netip.MustParseAddr(s)) {
			t.Errorf("%s allowed outside the operator's ranges", s)
		}
	}
}

func TestParsePrefixesError(t *testing.T) {
	if _, err := ParsePrefixes("10.0.0.0/8,nonsense"); err == nil {
		t.Fatal("bad prefix accepted")
	}
	if ps, err := ParsePrefixes(""); err != nil || len(ps) != 0 {
		t.Fatalf("empty list: %v %v", ps, err)
	}
}
