package rendezvous

import (
	"context"
	"errors"
	"testing"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/wire"
)

// TestKeepaliveStranger is the attack first: a stranger with a fresh key
// and an unproven address gets only a CookieReply smaller than its
// Keepalive; with the cookie but a wrong one inside the box, a sealed
// Challenge; with both, a KeepaliveAck naming the instance and the epoch,
// never larger than the request, and nothing in the registry.
func TestKeepaliveStranger(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Instance = "r2-rendezvous" })
	want, _ := f.reg.(*discovery.Memory).Epoch(context.Background())
	p := f.newPeer("203.0.113.7:41000")
	req := f.seal(p, &wire.Keepalive{})
	out := f.exchange(p.addr, req)
	p.cookie = f.cookieOf(out)
	if len(out[0].b) > len(req) {
		t.Fatalf("cookie reply %d bytes to a %d-byte keepalive", len(out[0].b), len(req))
	}
	req = f.seal(p, &wire.Keepalive{Cookie: crypto.Cookie{1}})
	out = f.exchange(p.addr, req)
	if len(out) != 1 || len(out[0].b) > len(req) {
		t.Fatalf("wrong inner cookie: %d replies, want one challenge no larger than the request", len(out))
	}
	if c, ok := f.open(p, out[0].b).Body.(*wire.Challenge); !ok || c.For != wire.MsgKeepalive {
		t.Fatalf("wrong inner cookie: got %+v, want a Challenge for the keepalive", f.open(p, out[0].b).Body)
	}
	req = f.seal(p, &wire.Keepalive{Cookie: p.cookie})
	out = f.exchange(p.addr, req)
	if len(out) != 1 || out[0].to != p.addr {
		t.Fatalf("%d replies, want one ack to the sender", len(out))
	}
	if len(out[0].b) > len(req) {
		t.Fatalf("ack %d bytes to a %d-byte keepalive: amplification", len(out[0].b), len(req))
	}
	a, ok := f.open(p, out[0].b).Body.(*wire.KeepaliveAck)
	if !ok || a.Instance != "r2-rendezvous" || a.Epoch != want || want == 0 {
		t.Fatalf("ack %+v, want instance r2-rendezvous, epoch %x", a, want)
	}
	if _, err := f.reg.Get(context.Background(), p.id.ID()); !errors.Is(err, discovery.ErrNotFound) {
		t.Fatalf("a keepalive left a record (err %v)", err)
	}
	// The same datagram again is a replay: no answer.
	if out := f.exchange(p.addr, req); len(out) != 0 {
		t.Fatalf("a replayed keepalive got %d replies", len(out))
	}
}
