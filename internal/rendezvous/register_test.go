package rendezvous

import (
	"context"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/wire"
)

// twoInstances returns X and Y, two servers behind one anycast address:
// one identity, one cookie secret, one registry, one clock, but a replay
// cache each.
func twoInstances(t *testing.T) (x, y *fixture) {
	t.Helper()
	x = newFixture(t, nil)
	y = newFixture(t, func(c *Config) {
		c.Identity, c.Registry, c.Cookies, c.Now = x.srv.cfg.Identity, x.reg, x.srv.cfg.Cookies, x.clock.Now
		c.Instance = "test-2"
	})
	y.reg, y.clock = x.reg, x.clock
	return x, y
}

func (f *fixture) instanceOf(p *peer) string {
	f.t.Helper()
	rec, err := f.reg.Get(context.Background(), p.id.ID())
	if err != nil {
		f.t.Fatal(err)
	}
	return rec.Instance
}

// TestRegisterNotNewer: B's Register taken by X, replayed from B's
// address to Y (which never saw it), is dropped and counted, and B's
// record stays X's; B's next Register, at Y (its route moved), is taken
// at once; a Register stamped by a clock that stepped back is refused
// until that clock passes the stored time.
func TestRegisterNotNewer(t *testing.T) {
	x, y := twoInstances(t)
	b := x.newPeer("198.51.100.9:50000")
	x.register(b, wire.Register{AllowAny: true})
	captured := x.seal(b, &wire.Register{Cookie: b.cookie, AllowAny: true})
	if out := x.exchange(b.addr, captured); len(out) != 1 {
		t.Fatalf("X answered B's Register with %d replies", len(out))
	}

	x.clock.Add(2 * time.Second)
	if out := y.exchange(b.addr, captured); len(out) != 0 {
		t.Fatalf("Y answered the replayed Register with %d replies", len(out))
	}
	if got := y.rejected("register_not_newer"); got != 1 {
		t.Fatalf("Y counted register_not_newer %v, want 1", got)
	}
	if got := x.instanceOf(b); got != "test-1" {
		t.Fatalf("after the replay at Y, B's record names %q, want X", got)
	}

	// B's route moved to Y: its next Register is newer, taken at once.
	if r := y.register(b, wire.Register{AllowAny: true}); r.Instance != "test-2" {
		t.Fatalf("B's Register at Y answered by %q", r.Instance)
	}
	if got := x.instanceOf(b); got != "test-2" {
		t.Fatalf("B moved to Y but its record names %q", got)
	}

	// B's clock steps back 10 s (within the window): refused while it is
	// behind the stored time, taken once it passed it.
	stepped := func() []outPacket {
		m := wire.Message{Time: x.clock.Now().Add(-10 * time.Second).UnixMilli(), Body: &wire.Register{Cookie: b.cookie, AllowAny: true}}
		return x.exchange(b.addr, x.sealMessage(b, m))
	}
	if out := stepped(); len(out) != 0 {
		t.Fatalf("a Register from a clock 10 s back got %d replies, want none", len(out))
	}
	if got := x.rejected("register_not_newer"); got != 1 {
		t.Fatalf("X counted register_not_newer %v, want 1", got)
	}
	if got := x.instanceOf(b); got != "test-2" {
		t.Fatalf("the stepped-back Register moved B's record to %q", got)
	}
	x.clock.Add(10*time.Second + time.Millisecond)
	out := stepped()
	if len(out) != 1 {
		t.Fatalf("once the clock passed the stored time: %d replies, want the Registered", len(out))
	}
	if _, ok := x.open(b, out[0].b).Body.(*wire.Registered); !ok {
		t.Fatalf("reply %T, want Registered", x.open(b, out[0].b).Body)
	}
	if got := x.instanceOf(b); got != "test-1" {
		t.Fatalf("B's record names %q, want X", got)
	}
}
