package wire

import (
	"testing"

	"github.com/keymesh/keymesh/internal/crypto"
)

func ident(t testing.TB) *crypto.Identity {
	t.Helper()
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestClassify(t *testing.T) {
	stun := make([]byte, 20)
	stun[1] = 1
	stun[4], stun[5], stun[6], stun[7] = 0x21, 0x12, 0xA4, 0x42
	if Classify(stun) != KindSTUN {
		t.Fatal("STUN not recognised")
	}
	if Classify([]byte{0xc0, 0, 0, 1}) != KindUnknown {
		t.Fatal("QUIC long header misclassified")
	}
	if Classify(nil) != KindUnknown {
		t.Fatal("empty misclassified")
	}
}
