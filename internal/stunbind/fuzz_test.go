package stunbind

import (
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"
)

// FuzzParseBindingResponse: no panic, and an accepted response carries a
// valid mapped address; OTHER-ADDRESS and RESPONSE-ORIGIN are valid or
// zero.
func FuzzParseBindingResponse(f *testing.F) {
	req, _, _ := Request(RequestOptions{Fingerprint: true})
	f.Add(req)
	req, _, _ = Request(RequestOptions{Change: 0x06, Padding: 48})
	f.Add(req)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.ParseIP("198.51.100.1"), Port: 1}).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingSuccess,
		&stun.MappedAddress{IP: net.ParseIP("2001:db8::1"), Port: 65535}).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.ParseIP("203.0.113.7"), Port: 4242},
		&stun.OtherAddress{IP: net.ParseIP("198.51.100.2"), Port: 3479},
		&stun.ResponseOrigin{IP: net.ParseIP("198.51.100.1"), Port: 3478}).Raw)
	f.Add([]byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Parse(b)
		if err != nil {
			return
		}
		if !r.Mapped.IsValid() || r.Mapped.Port() == 0 {
			t.Fatalf("accepted invalid address %v", r.Mapped)
		}
		for _, a := range []netip.AddrPort{r.Other, r.Origin} {
			if a.IsValid() && a.Port() == 0 {
				t.Fatalf("RFC 5780 address with port 0: %v", a)
			}
		}
	})
}
