package wire

import (
	"testing"

	"github.com/keymesh/keymesh/internal/crypto"
)

// TestRequestProof checks that a Request's proof holds for the cookie it was
// made with and no other, that a request without a cookie carries none,
// and that a CookieReply is smaller than any request and gives back the
// request's salt.
func TestRequestProof(t *testing.T) {
	id, _ := crypto.GenerateIdentity(nil)
	shared, _ := id.SharedKey(id.ID())
	plain := AppendMessage(nil, Message{Time: 1, Body: &Register{}})
	cookie := crypto.Cookie{1, 2, 3}
	b, salt := SealRequest(nil, id.ID(), shared, plain, &cookie)
	s, err := ParseRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	if !s.ProofValid(&cookie) {
		t.Fatal("proof does not hold for its cookie")
	}
	other := crypto.Cookie{9}
	if s.ProofValid(&other) {
		t.Fatal("proof holds for another cookie")
	}
	if m, err := s.Open(shared); err != nil || m.Body.Type() != MsgRegister {
		t.Fatalf("request does not open: %v", err)
	}
	none, _ := SealRequest(nil, id.ID(), shared, plain, nil)
	if s, _ := ParseRequest(none); s.ProofValid(&cookie) {
		t.Fatal("a request without a cookie proves one")
	}
	r := AppendCookieReply(nil, cookie, salt)
	if len(r) != CookieReplyLen || len(r) >= len(b) {
		t.Fatalf("cookie reply of %d bytes to a request of %d", len(r), len(b))
	}
	c, gotSalt, err := ParseCookieReply(r)
	if err != nil || c != cookie || gotSalt != salt {
		t.Fatalf("cookie reply parsed to %x %x %v", c, gotSalt, err)
	}
	if _, err := ParseSealed(b); err == nil {
		t.Fatal("a request parses as a sealed frame")
	}
}
