package rzclient

import (
	"net/netip"
	"testing"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// FuzzHandleFrame feeds arbitrary datagrams (and mutations of real server
// frames) to the client: no panic, and only frames claiming the server key,
// or cookie replies (from the server's address), are consumed.
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
	_ = fs.client.send(&wire.Register{})
	f.Add(wire.AppendCookieReply(nil, crypto.Cookie{1}, fs.client.salts[0].salt))
	f.Add(wire.AppendCookieReply(nil, crypto.Cookie{2}, [wire.SaltLen]byte{}))
	f.Add([]byte{wire.TypeCookieReply, wire.RequestVersion})
	key := fs.id.ID()
	f.Fuzz(func(t *testing.T, b []byte) {
		consumed := fs.client.HandleFrame(b, serverAddr)
		if consumed && len(b) > 0 && b[0] == wire.TypeCookieReply {
			return
		}
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
