package rzclient

import (
	"net/netip"
	"testing"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// FuzzHandleFrame feeds arbitrary datagrams (and mutations of real server
// frames) to the client: no panic, and only frames claiming the server key
// are consumed.
func FuzzHandleFrame(f *testing.F) {
	fs := newFake(f, nil)
	fs.client.cfg.Send = func([]byte, netip.AddrPort) error { return nil }
	f.Add(fs.frame(&wire.Registered{Relays: []string{"a:1"}}))
	f.Add(fs.frame(&wire.Challenge{For: wire.MsgRegister}))
	f.Add(fs.frame(&wire.ConnectReply{Found: true}))
	f.Add(fs.frame(&wire.Punch{}))
	f.Add(fs.frame(&wire.Error{Code: wire.ErrCodeBadToken, For: wire.MsgConnect}))
	f.Add([]byte{wire.TypeSealed, wire.Version})
	f.Add([]byte{})
	key := fs.id.ID()
	f.Fuzz(func(t *testing.T, b []byte) {
		consumed := fs.client.HandleFrame(b, serverAddr)
		if consumed {
			s, err := wire.ParseSealed(b)
			if err != nil || s.Sender != key {
				t.Fatal("consumed a frame not from the server key")
			}
		}
	})
}

// FuzzParse checks the connect-string and target parsers (no resolving).
func FuzzParse(f *testing.F) {
	id, _ := crypto.GenerateIdentity(nil)
	f.Add("127.0.0.1:3478#" + id.ID().String())
	f.Add("[::1]:1#" + id.ID().String())
	f.Add(id.ID().OverlayAddr().String())
	f.Add("#")
	f.Fuzz(func(t *testing.T, s string) {
		if hp, pid, err := splitServer(s); err == nil && (hp == "" || pid.IsZero() && s == "") {
			t.Fatalf("accepted %q", s)
		}
		if tg, err := parseTarget(s); err == nil && tg.id.IsZero() && !crypto.IsOverlay(tg.addr) {
			t.Fatalf("accepted %q as %v", s, tg)
		}
	})
}
