package crypto

import (
	"net/netip"
	"testing"
	"time"
)

// FuzzTicketOpen feeds arbitrary bytes to the relay's ticket opener: it must
// refuse them without panicking, and accept only what was sealed.
func FuzzTicketOpen(f *testing.F) {
	now := time.Unix(3_000_000, 0)
	tk, err := ParseTicketKeys([]byte("7 "+"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"), func() time.Time { return now })
	if err != nil {
		f.Fatal(err)
	}
	good := tk.Seal(nil, Ticket{Addr: netip.MustParseAddrPort("203.0.113.1:9"), Expiry: now.Add(time.Hour)})
	f.Add(good)
	f.Add(good[:50])
	f.Add([]byte{})
	f.Add(make([]byte, TicketSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := tk.Open(b)
		if err == nil && (len(b) < TicketSize || got.Expiry.Before(now)) {
			t.Fatalf("accepted %x", b)
		}
	})
}

// FuzzParsePeerID checks that every accepted peer ID re-encodes to itself.
func FuzzParsePeerID(f *testing.F) {
	f.Add("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
	f.Add("")
	f.Add("zzzz")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParsePeerID(s)
		if err != nil {
			return
		}
		if id.String() != normalizeForTest(s) {
			t.Fatalf("%q parsed to %s", s, id)
		}
	})
}

func normalizeForTest(s string) string {
	out := []byte{}
	for _, c := range []byte(s) {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' {
			continue
		}
		out = append(out, c)
	}
	return string(out)
}

// FuzzParseIdentity feeds arbitrary key files to the parser.
func FuzzParseIdentity(f *testing.F) {
	id, _ := GenerateIdentity(nil)
	good, _ := MarshalIdentity(id)
	f.Add(good)
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseIdentity(b)
	})
}
