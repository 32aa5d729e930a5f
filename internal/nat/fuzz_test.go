package nat

import (
	"net"
	"testing"

	"github.com/pion/stun/v4"
)

func FuzzParseBindingResponse(f *testing.F) {
	req, _, _ := BindingRequest()
	f.Add(req)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.ParseIP("198.51.100.1"), Port: 1}).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingSuccess,
		&stun.MappedAddress{IP: net.ParseIP("2001:db8::1"), Port: 65535}).Raw)
	f.Add([]byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, addr, err := ParseBindingResponse(b)
		if err == nil && (!addr.IsValid() || addr.Port() == 0) {
			t.Fatalf("accepted invalid address %v", addr)
		}
	})
}
