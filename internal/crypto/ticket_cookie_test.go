package crypto

import (
	"bytes"
	"net/netip"
	"testing"
)

func TestTicketKeysCookieSecret(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	a, _ := NewTicketKeys(1, map[byte][]byte{1: k1, 2: k2}, nil)
	b, _ := NewTicketKeys(1, map[byte][]byte{1: k1}, nil)
	c, _ := NewTicketKeys(2, map[byte][]byte{1: k1, 2: k2}, nil)
	if !bytes.Equal(a.CookieSecret(), b.CookieSecret()) {
		t.Fatal("instances with the same seal key derive different cookie secrets")
	}
	if bytes.Equal(a.CookieSecret(), c.CookieSecret()) {
		t.Fatal("another seal key derives the same cookie secret")
	}
	if len(a.CookieSecret()) < 16 || bytes.Contains(a.CookieSecret(), k1[:8]) {
		t.Fatal("cookie secret too short or leaks the key")
	}
	// Cookies from one instance check at the other.
	addr := netip.MustParseAddrPort("203.0.113.9:4000")
	if !NewCookieJar(b.CookieSecret(), nil).Check(addr, NewCookieJar(a.CookieSecret(), nil).Make(addr)) {
		t.Fatal("a cookie made by one instance fails at another")
	}
}
