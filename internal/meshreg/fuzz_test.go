package meshreg_test

import (
	"net/netip"
	"testing"

	"github.com/keymesh/keymesh/internal/meshreg"
)

// FuzzParseValue: a member's value is read from Redis; whatever it holds,
// parsing neither panics nor yields an address an instance must not send
// to.
func FuzzParseValue(f *testing.F) {
	f.Add("203.0.113.5:3490 0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f")
	f.Add("[2001:db8::1]:3490 0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f")
	f.Add("[fe80::1%eth0]:3490 0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f")
	f.Add("0.0.0.0:0 zz")
	f.Add("")
	self := netip.MustParseAddrPort("203.0.113.10:3490")
	f.Fuzz(func(t *testing.T, v string) {
		a, ok := meshreg.ParseValue(v)
		if !ok {
			return
		}
		if a.Addr().Zone() != "" || a.Addr().Is4In6() {
			t.Fatalf("%q parsed to %v", v, a)
		}
		if meshreg.Acceptable(a, self) && (a.Port() == 0 || a.Addr().IsUnspecified() || a.Addr().IsMulticast() || a.Addr().IsLoopback()) {
			t.Fatalf("%q: %v accepted", v, a)
		}
	})
}
