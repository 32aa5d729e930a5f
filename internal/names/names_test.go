package names

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/keymesh/keymesh/internal/crypto"
)

func peer(t testing.TB, b byte) crypto.PeerID {
	t.Helper()
	id, err := crypto.IdentityFromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return id.ID()
}

// TestNamesResolveOnlyFromOwnConfig: a short name resolves to the key this
// peer's configuration gives it and to nothing else; a name the
// configuration does not hold resolves to nothing; a peer ID resolves to
// its own derived address.
func TestNamesResolveOnlyFromOwnConfig(t *testing.T) {
	web, db, stranger := peer(t, 1), peer(t, 2), peer(t, 3)
	cfg := map[string]crypto.PeerID{}
	if err := Add(cfg, "web", web); err != nil {
		t.Fatal(err)
	}
	if err := Parse(strings.NewReader("# names\n\nDB "+db.String()+"\n"), cfg); err != nil {
		t.Fatal(err)
	}
	tab, err := NewTable("", cfg)
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]crypto.PeerID{
		"web.keymesh":                  web,
		"WEB.Keymesh.":                 web,
		"db.keymesh":                   db,
		stranger.String() + ".keymesh": stranger,
		strings.ToUpper(stranger.String()) + ".KEYMESH.": stranger,
	} {
		got, ok := tab.Lookup(host)
		if !ok || got != want {
			t.Errorf("Lookup(%q) = %s, %v; want %s", host, got.Short(), ok, want.Short())
		}
		if a, _ := tab.LookupAddr(host); a != want.OverlayAddr() {
			t.Errorf("LookupAddr(%q) = %s, want %s", host, a, want.OverlayAddr())
		}
	}
	for _, host := range []string{
		"mail.keymesh",                       // not configured
		"web",                                // no suffix
		"web.keymesh.example",                // another zone
		"web.example",                        // another zone
		"a.web.keymesh",                      // two labels
		"keymesh",                            // the apex
		".keymesh",                           // empty label
		stranger.String()[:51] + "1.keymesh", // 52 characters, not a peer ID
	} {
		if id, ok := tab.Lookup(host); ok {
			t.Errorf("Lookup(%q) = %s, want not found", host, id.Short())
		}
	}
	// Another suffix.
	tab2, err := NewTable("mesh.internal.", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := tab2.Lookup("web.mesh.internal"); !ok || id != web {
		t.Errorf("web.mesh.internal = %s, %v", id.Short(), ok)
	}
	if _, ok := tab2.Lookup("web.keymesh"); ok {
		t.Error("a table for mesh.internal answers for keymesh")
	}
}

func TestNamesRefused(t *testing.T) {
	a, b := peer(t, 1), peer(t, 2)
	cfg := map[string]crypto.PeerID{"web": a}
	if err := Add(cfg, "WEB", b); !errors.Is(err, ErrBadName) {
		t.Errorf("a name for two keys: %v", err)
	}
	if err := Add(cfg, "web", a); err != nil {
		t.Errorf("the same name for the same key again: %v", err)
	}
	for _, file := range []string{
		"web",                      // no key
		"web " + a.String() + " x", // three fields
		"1web " + a.String(),       // bad name
		"web notakey",              // bad key
		"web " + b.String(),        // web is a's already
		strings.Repeat("x", 600),   // line too long
	} {
		m := map[string]crypto.PeerID{"web": a}
		if err := Parse(strings.NewReader(file), m); !errors.Is(err, ErrBadName) {
			t.Errorf("names file %.40q: %v, want ErrBadName", file, err)
		}
	}
	if _, err := NewTable("", map[string]crypto.PeerID{a.String(): b}); !errors.Is(err, ErrBadName) {
		t.Errorf("a name that is a peer ID: %v", err)
	}
	if _, err := NewTable("bad_suffix", nil); !errors.Is(err, ErrBadName) {
		t.Errorf("bad suffix: %v", err)
	}
}
