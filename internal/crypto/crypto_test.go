package crypto

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustIdentity(t testing.TB) *Identity {
	t.Helper()
	id, err := GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestPeerIDRoundTrip(t *testing.T) {
	id := mustIdentity(t).ID()
	s := id.String()
	if len(s) != PeerIDLen || strings.ToLower(s) != s {
		t.Fatalf("text form %q: want %d lowercase characters", s, PeerIDLen)
	}
	got, err := ParsePeerID(strings.ToUpper(s) + "\n")
	if err != nil || got != id {
		t.Fatalf("ParsePeerID(%q) = %v, %v; want %v", s, got, err, id)
	}
	for _, bad := range []string{"", "abc", s[:51], s + "a", strings.Repeat("1", 52), s[:51] + "9"} {
		if _, err := ParsePeerID(bad); !errors.Is(err, ErrBadPeerID) {
			t.Errorf("ParsePeerID(%q) err = %v, want ErrBadPeerID", bad, err)
		}
	}
}

func TestParsePeerIDRejectsNonCanonical(t *testing.T) {
	s := mustIdentity(t).ID().String()
	// The last character carries 4 unused bits: flip one.
	last := s[51]
	alt := byte('a')
	if last == 'a' {
		alt = 'b'
	}
	if _, err := ParsePeerID(s[:51] + string(alt)); err == nil {
		// Only canonical encodings round-trip, so any accepted string must re-encode to itself.
		p, _ := ParsePeerID(s[:51] + string(alt))
		if p.String() != s[:51]+string(alt) {
			t.Fatal("accepted a non-canonical peer ID")
		}
	}
}

func TestOverlayAddr(t *testing.T) {
	a, b := mustIdentity(t).ID(), mustIdentity(t).ID()
	aa := a.OverlayAddr()
	if !OverlayPrefix.Contains(aa) || !IsOverlay(aa) {
		t.Fatalf("%v not in %v", aa, OverlayPrefix)
	}
	if aa != a.OverlayAddr() {
		t.Fatal("overlay address not stable")
	}
	if !a.Owns(aa) || b.Owns(aa) || a.Owns(b.OverlayAddr()) {
		t.Fatal("Owns is wrong")
	}
	if IsOverlay(netip.MustParseAddr("fd00::1")) {
		t.Fatal("fd00::1 is not in the overlay prefix")
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "peer.key")
	id, created, err := LoadOrCreateKeyFile(p)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, err %v; want 0600", st.Mode().Perm(), err)
	}
	again, created, err := LoadOrCreateKeyFile(p)
	if err != nil || created || again.ID() != id.ID() {
		t.Fatalf("reload: %v %v", created, err)
	}
	if err := WriteKeyFile(p, id); err == nil {
		t.Fatal("WriteKeyFile replaced an existing key")
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(p); !errors.Is(err, ErrKeyFileExposed) || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key: err = %v", err)
	}
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(bad); !errors.Is(err, ErrBadKeyFile) {
		t.Fatalf("malformed key: err = %v", err)
	}
	if _, err := LoadKeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing key file accepted")
	}
}

func TestBox(t *testing.T) {
	a, b, c := mustIdentity(t), mustIdentity(t), mustIdentity(t)
	ab, err := a.SharedKey(b.ID())
	if err != nil {
		t.Fatal(err)
	}
	ba, err := b.SharedKey(a.ID())
	if err != nil {
		t.Fatal(err)
	}
	if *ab != *ba {
		t.Fatal("shared keys differ")
	}
	n := NewNonce()
	sealed := SealBox(nil, []byte("hello"), &n, ab)
	got, err := OpenBox(nil, sealed, &n, ba)
	if err != nil || string(got) != "hello" {
		t.Fatalf("open: %q %v", got, err)
	}
	cb, _ := c.SharedKey(b.ID())
	if _, err := OpenBox(nil, sealed, &n, cb); !errors.Is(err, ErrOpen) {
		t.Fatalf("wrong key opened the box: %v", err)
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := OpenBox(nil, sealed, &n, ba); !errors.Is(err, ErrOpen) {
		t.Fatal("tampered box opened")
	}
	var bogus PeerID
	bogus[31] = 0xff // not a valid point encoding
	bogus[0] = 2
	if _, err := a.SharedKey(bogus); err == nil {
		t.Log("note: bogus key accepted as a point; the low-order check still applies")
	}
}

func TestCookie(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	jar := NewCookieJar([]byte("0123456789abcdef0123456789abcdef"), func() time.Time { return now })
	addr := netip.MustParseAddrPort("203.0.113.7:4000")
	c := jar.Make(addr)
	if !jar.Check(addr, c) {
		t.Fatal("fresh cookie refused")
	}
	if jar.Check(netip.MustParseAddrPort("203.0.113.7:4001"), c) {
		t.Fatal("cookie accepted for another port")
	}
	other := NewCookieJar([]byte("another secret, 32 bytes long..."), func() time.Time { return now })
	if other.Check(addr, c) {
		t.Fatal("cookie accepted under another secret")
	}
	now = now.Add(CookieWindow)
	if !jar.Check(addr, c) {
		t.Fatal("cookie of the previous period refused")
	}
	now = now.Add(2 * CookieWindow)
	if jar.Check(addr, c) {
		t.Fatal("stale cookie accepted")
	}
}

func TestTickets(t *testing.T) {
	now := time.Unix(2_000_000, 0)
	clock := func() time.Time { return now }
	line1 := NewTicketKeyLine(1)
	old, err := ParseTicketKeys([]byte(line1), clock)
	if err != nil {
		t.Fatal(err)
	}
	tk := Ticket{Addr: netip.MustParseAddrPort("198.51.100.9:5555"), ID: mustIdentity(t).ID(), Expiry: now.Add(time.Minute)}
	sealed := old.Seal(nil, tk)
	if len(sealed) != TicketSize {
		t.Fatalf("ticket is %d bytes, want %d", len(sealed), TicketSize)
	}
	got, err := old.Open(sealed)
	if err != nil || got.Addr != tk.Addr || got.ID != tk.ID || !got.Expiry.Equal(tk.Expiry) {
		t.Fatalf("open: %+v %v", got, err)
	}
	if _, err := old.Open(sealed[:TicketSize-1]); !errors.Is(err, ErrTicketTruncated) {
		t.Fatalf("truncated: %v", err)
	}
	forged := bytes.Clone(sealed)
	forged[30] ^= 1
	if _, err := old.Open(forged); !errors.Is(err, ErrTicketForged) {
		t.Fatalf("forged: %v", err)
	}
	// Rotation: new key first, old key still accepted, then removed.
	rotated, err := ParseTicketKeys([]byte(NewTicketKeyLine(2)+"# old\n"+line1), clock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rotated.Open(sealed); err != nil {
		t.Fatalf("old ticket refused during grace: %v", err)
	}
	fresh, err := ParseTicketKeys([]byte(NewTicketKeyLine(2)), clock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Open(sealed); !errors.Is(err, ErrTicketUnknown) {
		t.Fatalf("unknown key: %v", err)
	}
	now = now.Add(2 * time.Minute)
	if _, err := old.Open(sealed); !errors.Is(err, ErrTicketExpired) {
		t.Fatalf("expired: %v", err)
	}
	for _, bad := range []string{"", "1", "x " + strings.Repeat("a", 64), "1 abcd", "300 " + strings.Repeat("a", 64), "1 " + strings.Repeat("a", 64) + "\n1 " + strings.Repeat("b", 64)} {
		if _, err := ParseTicketKeys([]byte(bad), clock); err == nil {
			t.Errorf("ParseTicketKeys(%q) accepted", bad)
		}
	}
}

func TestTLSBoundToKeys(t *testing.T) {
	srv, cli, stranger := mustIdentity(t), mustIdentity(t), mustIdentity(t)
	handshake := func(serverAccept func(PeerID) error, clientWants PeerID, clientID *Identity) (error, error) {
		sc, err := srv.ServerTLS(serverAccept)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := clientID.ClientTLS(clientWants)
		if err != nil {
			t.Fatal(err)
		}
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		errc := make(chan error, 1)
		go func() {
			s := tls.Server(a, sc)
			errc <- s.Handshake()
			s.Close()
		}()
		c := tls.Client(b, cc)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		cerr := c.Handshake()
		if cerr == nil {
			// Read to surface a server-side rejection of our certificate.
			_, cerr = c.Read(make([]byte, 1))
			if cerr != nil && strings.Contains(cerr.Error(), "EOF") {
				cerr = nil
			}
		}
		c.Close()
		return cerr, <-errc
	}
	allowCli := Expect(cli.ID())
	if cerr, serr := handshake(allowCli, srv.ID(), cli); cerr != nil || serr != nil {
		t.Fatalf("good handshake: client %v, server %v", cerr, serr)
	}
	if cerr, _ := handshake(allowCli, stranger.ID(), cli); cerr == nil || !strings.Contains(cerr.Error(), "expected key") {
		t.Fatalf("client accepted the wrong server: %v", cerr)
	}
	if _, serr := handshake(allowCli, srv.ID(), stranger); serr == nil || !errors.Is(serr, ErrWrongPeer) {
		t.Fatalf("server accepted a stranger: %v", serr)
	}
}

// TestTicketInstance: the relay instance a ticket names survives sealing,
// and a ticket without one (as relays sealed them before instance numbers)
// opens as instance 0 with its expiry intact.
func TestTicketInstance(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	tk, err := ParseTicketKeys([]byte(NewTicketKeyLine(1)), clock)
	if err != nil {
		t.Fatal(err)
	}
	for _, inst := range []uint16{0, 1, 2, 65535} {
		in := Ticket{Addr: netip.MustParseAddrPort("198.51.100.9:5555"), ID: mustIdentity(t).ID(), Expiry: now.Add(time.Minute), Instance: inst}
		got, err := tk.Open(tk.Seal(nil, in))
		if err != nil {
			t.Fatalf("instance %d: %v", inst, err)
		}
		if got.Instance != inst || !got.Expiry.Equal(in.Expiry) || got.Addr != in.Addr || got.ID != in.ID {
			t.Fatalf("got %+v, want %+v", got, in)
		}
	}
	// The layout before instance numbers: an 8-byte expiry, whose top two
	// bytes are zero for any real date.
	old := Ticket{Addr: netip.MustParseAddrPort("198.51.100.9:5555"), Expiry: now.Add(time.Minute)}
	got, err := tk.Open(tk.Seal(nil, old))
	if err != nil || got.Instance != 0 || !got.Expiry.Equal(old.Expiry) {
		t.Fatalf("old-layout ticket: %+v, %v", got, err)
	}
	// An expired ticket naming an instance is still expired.
	now = now.Add(2 * time.Minute)
	if _, err := tk.Open(tk.Seal(nil, Ticket{Expiry: now.Add(-time.Second), Instance: 7})); !errors.Is(err, ErrTicketExpired) {
		t.Fatalf("expired ticket with an instance: %v", err)
	}
}
