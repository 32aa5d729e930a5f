package crypto

import (
	"testing"

	"golang.org/x/crypto/nacl/box"
)

// SharedKey must give exactly NaCl's box.Precompute key.
func TestSharedKeyMatchesBoxPrecompute(t *testing.T) {
	for range 20 {
		a, b := mustIdentity(t), mustIdentity(t)
		got, err := a.SharedKey(b.ID())
		if err != nil {
			t.Fatal(err)
		}
		xb, err := X25519Public(b.ID())
		if err != nil {
			t.Fatal(err)
		}
		var want [32]byte
		box.Precompute(&want, &xb, &a.xpriv)
		if *got != want {
			t.Fatal("SharedKey differs from box.Precompute")
		}
	}
}

func BenchmarkSharedKey(b *testing.B) {
	x, _ := GenerateIdentity(nil)
	y, _ := GenerateIdentity(nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := x.SharedKey(y.ID()); err != nil {
			b.Fatal(err)
		}
	}
}
