package rendezvous

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/wire"
)

// TestAnswersCarryEpoch: Registered, ConnectReply and Punch carry the
// registry's epoch, so a peer can tell a registry that lost its records.
func TestAnswersCarryEpoch(t *testing.T) {
	f := newFixture(t, nil)
	want, _ := f.reg.(*discovery.Memory).Epoch(context.Background())
	a := f.newPeer("203.0.113.5:40000")
	b := f.newPeer("198.51.100.9:50000")
	if r := f.register(a, wire.Register{AllowAny: true}); r.Epoch != want || want == 0 {
		t.Fatalf("Registered epoch %x, want the registry's %x", r.Epoch, want)
	}
	f.register(b, wire.Register{AllowAny: true})
	out := f.exchange(a.addr, f.seal(a, &wire.Connect{Cookie: a.cookie, TxID: 1, Target: b.id.ID()}))
	if len(out) != 2 {
		t.Fatalf("%d replies, want punch + reply", len(out))
	}
	p, _ := f.open(b, out[0].b).Body.(*wire.Punch)
	r, _ := f.open(a, out[1].b).Body.(*wire.ConnectReply)
	if p == nil || r == nil || p.Epoch != want || r.Epoch != want {
		t.Fatalf("punch %+v, reply %+v: want epoch %x in both", p, r, want)
	}
	stranger, _ := crypto.GenerateIdentity(nil)
	out = f.exchange(a.addr, f.seal(a, &wire.Connect{Cookie: a.cookie, TxID: 2, Target: stranger.ID()}))
	if r, _ := f.open(a, out[0].b).Body.(*wire.ConnectReply); r == nil || r.Found || r.Epoch != want {
		t.Fatalf("not-found reply %+v: want epoch %x", r, want)
	}
}

// TestRestartFromSnapshot: a server restarted on the snapshot of its
// memory registry (same key) introduces a peer to one registered before the
// restart, at once, with the same epoch (nobody needs to register again);
// restarted without it, the epoch differs.
func TestRestartFromSnapshot(t *testing.T) {
	id, _ := crypto.GenerateIdentity(nil)
	f := newFixture(t, func(c *Config) { c.Identity = id })
	a := f.newPeer("203.0.113.5:40000")
	b := f.newPeer("198.51.100.9:50000")
	regd := f.register(b, wire.Register{AllowAny: true})
	f.register(a, wire.Register{AllowAny: true})
	path := filepath.Join(t.TempDir(), "snap")
	key := discovery.SnapshotKey(id.Seed())
	if err := f.reg.(*discovery.Memory).SaveSnapshot(path, key); err != nil {
		t.Fatal(err)
	}

	g := newFixture(t, func(c *Config) { c.Identity = id })
	fresh, _ := g.reg.(*discovery.Memory).Epoch(context.Background())
	if fresh == regd.Epoch {
		t.Fatal("a registry started empty has the old epoch")
	}
	h := newFixture(t, func(c *Config) {
		c.Identity = id
		m := discovery.NewMemory(f.clock.Now)
		if _, err := m.LoadSnapshot(path, key); err != nil {
			t.Fatal(err)
		}
		c.Registry = m
	})
	a.cookie = crypto.Cookie{} // the new process's cookie jar may differ
	var out []outPacket
	for range 2 {
		out = h.exchange(a.addr, h.seal(a, &wire.Connect{Cookie: a.cookie, TxID: 7, Target: b.id.ID()}))
		if c, _, err := wire.ParseCookieReply(out[0].b); err == nil {
			a.cookie = c
			continue
		}
		break
	}
	if len(out) != 2 || out[0].to != b.addr {
		t.Fatalf("%d replies after the restart, want a punch to B at %v and a reply", len(out), b.addr)
	}
	r, _ := h.open(a, out[1].b).Body.(*wire.ConnectReply)
	if r == nil || !r.Found || r.Epoch != regd.Epoch {
		t.Fatalf("reply %+v: want found, epoch %x kept", r, regd.Epoch)
	}
}
