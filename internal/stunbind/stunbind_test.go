package stunbind

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"
)

func TestParseBindingResponse(t *testing.T) {
	req, tx, err := Request(RequestOptions{Fingerprint: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(req); !errors.Is(err, ErrNotResponse) {
		t.Fatalf("request parsed as response: %v", err)
	}
	if _, err := Parse([]byte("hello")); !errors.Is(err, ErrNotSTUN) {
		t.Fatalf("junk: %v", err)
	}
	m := stun.MustBuild(stun.NewTransactionIDSetter(tx), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.ParseIP("203.0.113.7"), Port: 4242})
	r, err := Parse(m.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if r.Tx != tx || r.Mapped != netip.MustParseAddrPort("203.0.113.7:4242") || !r.XOR {
		t.Fatalf("got %+v", r)
	}
	if r.Other.IsValid() || r.Origin.IsValid() {
		t.Fatalf("absent RFC 5780 attributes parsed: %+v", r)
	}
	bare := stun.MustBuild(stun.BindingSuccess, stun.TransactionID)
	if _, err := Parse(bare.Raw); !errors.Is(err, ErrNoMappedAddr) {
		t.Fatalf("no address: %v", err)
	}
	old := stun.MustBuild(stun.BindingSuccess, stun.TransactionID,
		&stun.MappedAddress{IP: net.ParseIP("2001:db8::1"), Port: 65535})
	if r, err := Parse(old.Raw); err != nil || r.XOR || r.Mapped != netip.MustParseAddrPort("[2001:db8::1]:65535") {
		t.Fatalf("MAPPED-ADDRESS: %+v %v", r, err)
	}
	zero := stun.MustBuild(stun.BindingSuccess, stun.TransactionID,
		&stun.XORMappedAddress{IP: net.ParseIP("203.0.113.7"), Port: 0})
	if _, err := Parse(zero.Raw); !errors.Is(err, ErrNoMappedAddr) {
		t.Fatalf("port 0: %v", err)
	}
}

// TestParseRFC5780: OTHER-ADDRESS and RESPONSE-ORIGIN come back beside the
// mapped address.
func TestParseRFC5780(t *testing.T) {
	m := stun.MustBuild(stun.TransactionID, stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.ParseIP("203.0.113.7"), Port: 4242},
		&stun.OtherAddress{IP: net.ParseIP("198.51.100.2"), Port: 3479},
		&stun.ResponseOrigin{IP: net.ParseIP("198.51.100.1"), Port: 3478})
	r, err := Parse(m.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if r.Other != netip.MustParseAddrPort("198.51.100.2:3479") || r.Origin != netip.MustParseAddrPort("198.51.100.1:3478") {
		t.Fatalf("got %+v", r)
	}
}

// TestRequestOptions: CHANGE-REQUEST, PADDING and FINGERPRINT are there when
// asked for, and nothing else.
func TestRequestOptions(t *testing.T) {
	plain, _, err := Request(RequestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(plain) != 20 {
		t.Fatalf("plain request is %d bytes, want 20", len(plain))
	}
	b, tx, err := Request(RequestOptions{Change: 0x06, Padding: 48, Fingerprint: true})
	if err != nil {
		t.Fatal(err)
	}
	m := &stun.Message{Raw: b}
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	if m.Type != stun.BindingRequest || m.TransactionID != tx {
		t.Fatalf("type %v tx %x", m.Type, m.TransactionID)
	}
	if cr, err := m.Get(stun.AttrChangeRequest); err != nil || len(cr) != 4 || cr[3] != 0x06 {
		t.Fatalf("CHANGE-REQUEST %x %v", cr, err)
	}
	if p, err := m.Get(stun.AttrPadding); err != nil || len(p) != 48 {
		t.Fatalf("PADDING %d bytes, %v", len(p), err)
	}
	if err := stun.Fingerprint.Check(m); err != nil {
		t.Fatalf("FINGERPRINT: %v", err)
	}
}

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
