package meshreg_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keymesh/keymesh/internal/meshreg"
	"github.com/keymesh/keymesh/internal/testutil/redistest"
)

// clock is an injected clock for the local lease.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Unix(1_800_000_000, 0).UnixNano())
	return c
}
func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func client(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c
}

func member(t *testing.T, c redis.UniversalClient, addr string, mod func(*meshreg.Config)) *meshreg.Member {
	t.Helper()
	cfg := meshreg.Config{Client: c, Group: "relay", Addr: netip.MustParseAddrPort(addr), Max: 8, TTL: 4 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	m, err := meshreg.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func step(t *testing.T, m *meshreg.Member) meshreg.View {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := m.Step(ctx)
	if err != nil {
		t.Fatalf("step: %v", err)
	}
	return v
}

// TestClaimsAreUnique: instances claiming at the same moment get distinct
// numbers, and each sees every other one at its address (itself not
// among its peers).
func TestClaimsAreUnique(t *testing.T) {
	srv := redistest.Start(t)
	c := client(t, srv.Addr())
	const n = 6
	ms := make([]*meshreg.Member, n)
	for i := range ms {
		ms[i] = member(t, c, fmt.Sprintf("203.0.113.%d:3490", 10+i), nil)
	}
	views := make([]meshreg.View, n)
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() {
			v, err := m.Step(context.Background())
			if err != nil {
				t.Errorf("member %d: %v", i, err)
			}
			views[i] = v
		})
	}
	wg.Wait()
	seen := map[uint16]int{}
	for i, v := range views {
		if v.Self == 0 {
			t.Fatalf("member %d holds no number", i)
		}
		if j, dup := seen[v.Self]; dup {
			t.Fatalf("members %d and %d both hold number %d", j, i, v.Self)
		}
		seen[v.Self] = i
	}
	// A second round sees everyone.
	for i, m := range ms {
		v := step(t, m)
		if v.Self != views[i].Self {
			t.Fatalf("member %d changed number %d -> %d with nothing lost", i, views[i].Self, v.Self)
		}
		if len(v.Peers) != n-1 {
			t.Fatalf("member %d sees %d peers, want %d: %v", i, len(v.Peers), n-1, v.Peers)
		}
		for j, o := range views {
			if j == i {
				if _, ok := v.Peers[o.Self]; ok {
					t.Fatalf("member %d lists itself", i)
				}
				continue
			}
			if want := netip.MustParseAddrPort(fmt.Sprintf("203.0.113.%d:3490", 10+j)); v.Peers[o.Self] != want {
				t.Fatalf("member %d sees number %d at %v, want %v", i, o.Self, v.Peers[o.Self], want)
			}
		}
	}
}

// TestLostClaim: a claim that expired (deleted here) is claimed again, the
// same number; one another instance took meanwhile is given up at once
// and another number claimed, so the two never share one.
func TestLostClaim(t *testing.T) {
	srv := redistest.Start(t)
	c := client(t, srv.Addr())
	ctx := context.Background()
	a := member(t, c, "203.0.113.10:3490", nil)
	b := member(t, c, "203.0.113.11:3490", nil)
	va, vb := step(t, a), step(t, b)
	if va.Self != 1 || vb.Self != 2 {
		t.Fatalf("numbers %d and %d, want 1 and 2", va.Self, vb.Self)
	}
	if err := c.Del(ctx, "keymesh:mesh:{relay}:1").Err(); err != nil {
		t.Fatal(err)
	}
	if v := step(t, a); v.Self != 1 {
		t.Fatalf("after its key expired, a holds %d, want 1 again", v.Self)
	}
	// Another instance's claim replaces a's (as if a's had expired and
	// the newcomer claimed number 1 before a came back).
	other := "203.0.113.99:3490 " + strings.Repeat("ab", 16)
	if err := c.Set(ctx, "keymesh:mesh:{relay}:1", other, 0).Err(); err != nil {
		t.Fatal(err)
	}
	v := step(t, a)
	if v.Self == 1 || v.Self == 2 || v.Self == 0 {
		t.Fatalf("a holds %d after losing 1 to another instance (b holds 2), want a free number", v.Self)
	}
	if got := c.Get(ctx, "keymesh:mesh:{relay}:1").Val(); got != other {
		t.Fatalf("a overwrote the other instance's claim: %q", got)
	}
	if v.Peers[1] != netip.MustParseAddrPort("203.0.113.99:3490") {
		t.Fatalf("a does not see the instance now holding 1: %v", v.Peers)
	}
}

// TestLeaseEndsLocally: while Redis is unreachable the instance keeps its
// number until its local lease (3/4 TTL after the last refresh was sent)
// runs out, then uses none, before Redis could give the number to another
// instance; and the peers read last are kept meanwhile.
func TestLeaseEndsLocally(t *testing.T) {
	srv := redistest.Start(t)
	c := client(t, srv.Addr())
	clk := newClock()
	a := member(t, c, "203.0.113.10:3490", func(cfg *meshreg.Config) { cfg.Now = clk.now })
	b := member(t, c, "203.0.113.11:3490", nil)
	step(t, b)
	if v := step(t, a); v.Self != 2 || len(v.Peers) != 1 {
		t.Fatalf("view %+v, want number 2 and one peer", v)
	}
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	clk.advance(3*time.Second - time.Millisecond) // TTL 4s: lease 3s
	v, err := a.Step(ctx)
	if err == nil {
		t.Fatal("a round with Redis down reported no error")
	}
	if v.Self != 2 || len(v.Peers) != 1 {
		t.Fatalf("within its lease: view %+v, want number 2 kept and the peer kept", v)
	}
	clk.advance(time.Millisecond)
	v, _ = a.Step(ctx)
	if v.Self != 0 {
		t.Fatalf("lease over: a still uses number %d", v.Self)
	}
	if len(v.Peers) != 1 {
		t.Fatalf("the peers read last were dropped: %v", v.Peers)
	}
	srv.Restart()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, err = a.Step(ctx)
		if err == nil && v.Self != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no number after Redis came back: %+v, %v", v, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHostileValues: what is read is bounded and checked. Only numbers 1
// to Max are read; values too long, malformed, or naming an address no
// instance should send to (unspecified, multicast, port 0, loopback for an
// instance that is not on loopback) are not members.
func TestHostileValues(t *testing.T) {
	srv := redistest.Start(t)
	c := client(t, srv.Addr())
	ctx := context.Background()
	tok := " " + strings.Repeat("0f", 16)
	bad := map[int]string{
		1: "0.0.0.0:3490" + tok,
		2: "224.0.0.1:3490" + tok,
		3: "203.0.113.5:0" + tok,
		4: "127.0.0.1:6379" + tok,
		5: "203.0.113.5:3490 " + strings.Repeat("a", 200),
		6: "not an address" + tok,
		7: "203.0.113.5:3490",
	}
	for n, v := range bad {
		if err := c.Set(ctx, fmt.Sprintf("keymesh:mesh:{relay}:%d", n), v, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Beyond Max (8): never read.
	if err := c.Set(ctx, "keymesh:mesh:{relay}:9", "203.0.113.6:3490"+tok, 0).Err(); err != nil {
		t.Fatal(err)
	}
	a := member(t, c, "203.0.113.10:3490", nil)
	v := step(t, a)
	if v.Self != 8 {
		t.Fatalf("a holds %d, want 8, the only free number", v.Self)
	}
	if len(v.Peers) != 0 {
		t.Fatalf("hostile values became members: %v", v.Peers)
	}
	// The group full: a newcomer gets no number and says so.
	b := member(t, c, "203.0.113.11:3490", nil)
	if v, err := b.Step(ctx); err == nil || v.Self != 0 {
		t.Fatalf("full group: view %+v, err %v; want no number and an error", v, err)
	}
	// Loopback members are fine among loopback instances (tests, one host).
	l := member(t, c, "127.0.0.2:3490", func(cfg *meshreg.Config) { cfg.Group = "lo" })
	if err := c.Set(ctx, "keymesh:mesh:{lo}:2", "127.0.0.3:3490"+tok, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v := step(t, l); v.Peers[2] != netip.MustParseAddrPort("127.0.0.3:3490") {
		t.Fatalf("loopback peer of a loopback instance refused: %v", v.Peers)
	}
}

// TestRelease: a released number is free at once for another instance, and
// Run calls back with each changed view and releases when it ends.
func TestRelease(t *testing.T) {
	srv := redistest.Start(t)
	c := client(t, srv.Addr())
	a := member(t, c, "203.0.113.10:3490", nil)
	ctx, cancel := context.WithCancel(context.Background())
	views := make(chan meshreg.View, 16)
	done := make(chan struct{})
	go func() { a.Run(ctx, func(v meshreg.View) { views <- v }); close(done) }()
	select {
	case v := <-views:
		if v.Self != 1 {
			t.Fatalf("first view %+v, want number 1", v)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no view from Run")
	}
	cancel()
	<-done
	n, err := c.Exists(context.Background(), "keymesh:mesh:{relay}:1").Result()
	if err != nil || n != 0 {
		t.Fatalf("after Run ended the claim is still there (%d, %v)", n, err)
	}
	b := member(t, c, "203.0.113.11:3490", nil)
	if v := step(t, b); v.Self != 1 {
		t.Fatalf("the released number went elsewhere: b holds %d", v.Self)
	}
}

// TestConfig: what New refuses.
func TestConfig(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	for _, cfg := range []meshreg.Config{
		{Group: "relay", Addr: netip.MustParseAddrPort("203.0.113.1:1")},
		{Client: c, Addr: netip.MustParseAddrPort("203.0.113.1:1")},
		{Client: c, Group: "re lay", Addr: netip.MustParseAddrPort("203.0.113.1:1")},
		{Client: c, Group: "relay", Addr: netip.MustParseAddrPort("0.0.0.0:1")},
		{Client: c, Group: "relay", Addr: netip.MustParseAddrPort("203.0.113.1:1"), Max: meshreg.MaxMax + 1},
		{Client: c, Group: "relay", Addr: netip.MustParseAddrPort("203.0.113.1:1"), TTL: time.Millisecond},
	} {
		if _, err := meshreg.New(cfg); !errors.Is(err, meshreg.ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
}
