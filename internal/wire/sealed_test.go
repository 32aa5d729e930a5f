package wire

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/keymesh/keymesh/internal/crypto"
)

func TestSealedFrame(t *testing.T) {
	a, b := ident(t), ident(t)
	ab, _ := a.SharedKey(b.ID())
	ba, _ := b.SharedKey(a.ID())
	m := Message{Time: 42, Body: &Probe{TxID: 9}}
	f := SealFrame(nil, a.ID(), ab, m)
	if Classify(f) != KindKeymesh {
		t.Fatal("sealed frame not classified as keymesh")
	}
	s, err := ParseSealed(f)
	if err != nil || s.Sender != a.ID() {
		t.Fatalf("parse: %v", err)
	}
	got, err := s.Open(ba)
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("open: %+v %v", got, err)
	}
	f[len(f)-3] ^= 0x10
	s, _ = ParseSealed(f)
	if _, err := s.Open(ba); !errors.Is(err, crypto.ErrOpen) {
		t.Fatalf("tampered frame opened: %v", err)
	}
	bad := bytes.Clone(f)
	bad[1] = 9
	if _, err := ParseSealed(bad); !errors.Is(err, ErrVersion) {
		t.Fatalf("version: %v", err)
	}
	if _, err := ParseSealed(f[:40]); !errors.Is(err, ErrShort) {
		t.Fatalf("short: %v", err)
	}
}
