package streamclient

import (
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
)

func TestParseTarget(t *testing.T) {
	id := mustID(t).ID()
	tg, err := ParseTarget("wss://relay.example:443#" + id.String())
	if err != nil || tg.Pin == nil || *tg.Pin != id || tg.URL != "wss://relay.example:443"+Path {
		t.Fatalf("%+v %v", tg, err)
	}
	for _, bad := range []string{"http://x/", "wss://", "wss://x#nope", "::"} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("ParseTarget(%q) accepted", bad)
		}
	}
}

func TestHelloRefusesBadSignature(t *testing.T) {
	id := mustID(t)
	h := AppendClientHello(nil, id, time.Now())
	if _, _, err := ParseClientHello(h); err != nil {
		t.Fatal(err)
	}
	h[5] ^= 1
	if _, _, err := ParseClientHello(h); err == nil {
		t.Fatal("forged hello accepted")
	}
}

// FuzzParse runs the tunnel's decoders over arbitrary bytes.
func FuzzParse(f *testing.F) {
	id, _ := crypto.GenerateIdentity(nil)
	f.Add(AppendClientHello(nil, id, time.Unix(0, 0)))
	f.Add(AppendServerHello(nil, netip.MustParseAddrPort("203.0.113.1:4000")))
	f.Add(AppendDatagram(nil, netip.MustParseAddrPort("203.0.113.1:4000"), []byte("hi")))
	f.Add([]byte{})
	f.Add(make([]byte, ClientHelloLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := ClientHelloTime(b); err == nil && len(b) != ClientHelloLen {
			t.Fatalf("helloTime accepted %d bytes", len(b))
		}
		_, _, _ = ParseClientHello(b)
		_, _ = ParseServerHello(b)
		if a, p, err := ParseDatagram(b); err == nil && (len(p) > MaxPayload || !a.IsValid()) {
			t.Fatalf("accepted %v with %d bytes", a, len(p))
		}
	})
}

// mustID is a fresh identity.
func mustID(t *testing.T) *crypto.Identity {
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
