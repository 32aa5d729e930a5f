package rzclient

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// fakeClock stands in for the client's retransmission timers: every wait
// the client starts is recorded, and fires when the test says so.
type fakeClock struct {
	mu    sync.Mutex
	waits []time.Duration
	chans []chan time.Time
	armed chan struct{}
}

func newFakeClock() *fakeClock { return &fakeClock{armed: make(chan struct{}, 64)} }

func (f *fakeClock) after(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	f.mu.Lock()
	f.waits = append(f.waits, d)
	f.chans = append(f.chans, ch)
	f.mu.Unlock()
	f.armed <- struct{}{}
	return ch
}

// fireNext waits until the client starts its next wait and ends it.
func (f *fakeClock) fireNext(t *testing.T) {
	t.Helper()
	select {
	case <-f.armed:
	case <-time.After(5 * time.Second):
		t.Fatal("the client started no wait within 5 s")
	}
	f.mu.Lock()
	ch := f.chans[len(f.chans)-1]
	f.mu.Unlock()
	ch <- time.Time{}
}

func (f *fakeClock) recorded() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.waits...)
}

// TestRetransmitSchedule: with the default timeouts one lost datagram
// costs about 250 ms, not a second; the timeouts double up to MaxBackoff,
// each within ±20% (jitter), and Connect (whose first timeout comes twice:
// connectAfter) gives up after a bounded number of sends, about 24 s.
func TestRetransmitSchedule(t *testing.T) {
	fs := newFake(t, func(c *Config) { c.Retransmit, c.MaxBackoff = 0, 0 }) // the defaults
	clk := newFakeClock()
	fs.client.after = clk.after
	for _, draw := range []struct {
		u      float64
		factor float64
	}{{0.5, 1}, {0, 0.8}, {0.999999, 1.2}} {
		fs.client.jitter = func() float64 { return draw.u }
		clk.waits, clk.chans = nil, nil
		done := make(chan error, 1)
		peerID, _ := crypto.GenerateIdentity(nil)
		go func() {
			_, err := fs.client.ConnectPeer(context.Background(), peerID.ID())
			done <- err
		}()
		for range DefaultConnectTries {
			clk.fireNext(t)
		}
		if err := <-done; !errors.Is(err, ErrNoAnswer) {
			t.Fatalf("connect: %v, want ErrNoAnswer", err)
		}
		nominal := []time.Duration{250, 250, 500, 1000, 2000, 4000, 8000, 8000}
		got := clk.recorded()
		if len(got) != len(nominal) {
			t.Fatalf("%d waits %v, want %d", len(got), got, len(nominal))
		}
		var total time.Duration
		for i, n := range nominal {
			want := time.Duration(float64(n*time.Millisecond) * draw.factor)
			if d := got[i] - want; d > time.Millisecond || d < -time.Millisecond {
				t.Errorf("jitter draw %v: wait %d is %v, want %v", draw.u, i, got[i], want)
			}
			total += got[i]
		}
		if draw.factor == 1 && (total < 23*time.Second || total > 24*time.Second) {
			t.Errorf("connect gives up after %v, want about 24 s", total)
		}
		if n := len(fs.sent); n != DefaultConnectTries {
			t.Errorf("%d sends, want %d", n, DefaultConnectTries)
		}
		fs.drain()
	}
}

// TestRegisterScheduleRestartsOnKick: Run's registration retransmits on the
// same schedule and starts it over after Reregister.
func TestRegisterScheduleRestartsOnKick(t *testing.T) {
	fs := newFake(t, func(c *Config) { c.Retransmit, c.MaxBackoff = 0, 0 })
	clk := newFakeClock()
	fs.client.after = clk.after
	fs.client.jitter = func() float64 { return 0.5 }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go fs.client.Run(ctx)
	for range 3 {
		clk.fireNext(t)
	}
	<-clk.armed
	fs.client.Reregister()
	<-clk.armed
	got := clk.recorded()
	want := []time.Duration{250, 500, 1000, 2000, 250}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("register waits %v, want %v ms", got, want)
		}
	}
}

// TestCookieReply: a CookieReply that echoes the salt of our last Register
// gives us the cookie, and the Register goes again at once with a proof of
// it outside the box (and the cookie inside); one that echoes no salt of
// ours, or comes from elsewhere, changes nothing.
func TestCookieReply(t *testing.T) {
	fs := newFake(t, func(c *Config) { c.Retransmit = time.Hour })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go fs.client.Run(ctx)
	fs.next()
	first := <-fs.frames
	forged := wire.AppendCookieReply(nil, crypto.Cookie{9}, [wire.SaltLen]byte{1})
	if !fs.client.HandleFrame(forged, serverAddr) {
		t.Fatal("a cookie reply from the server's address was not consumed")
	}
	elsewhere := wire.AppendCookieReply(nil, crypto.Cookie{8}, first.Salt())
	if fs.client.HandleFrame(elsewhere, netip.MustParseAddrPort("203.0.113.9:3478")) {
		t.Fatal("a cookie reply from another address was consumed")
	}
	select {
	case m := <-fs.sent:
		t.Fatalf("sent %T after a forged cookie reply", m.Body)
	case <-time.After(20 * time.Millisecond):
	}
	cookie := crypto.Cookie{7, 7, 7}
	fs.client.HandleFrame(wire.AppendCookieReply(nil, cookie, first.Salt()), serverAddr)
	r, ok := fs.next().Body.(*wire.Register)
	if !ok || r.Cookie != cookie {
		t.Fatalf("after the cookie reply: %+v", r)
	}
	again := <-fs.frames
	if !again.ProofValid(&cookie) {
		t.Fatal("the repeated register does not prove the cookie outside the box")
	}
	// The same reply again is spent.
	fs.client.HandleFrame(wire.AppendCookieReply(nil, cookie, first.Salt()), serverAddr)
	select {
	case m := <-fs.sent:
		t.Fatalf("sent %T after a repeated cookie reply", m.Body)
	case <-time.After(20 * time.Millisecond):
	}
}

// TestReplayCacheNeverFailsClosed is the punch-flood attack's second half:
// registered attackers make the server send the victim Punches, far more
// within the clock window than the client's replay cache holds; the
// client's own Registered and ConnectReply must still get through (the
// cache evicts, package replay, rather than refusing when full).
func TestReplayCacheNeverFailsClosed(t *testing.T) {
	var registered int
	now := time.Now()
	clock := func() time.Time { return now }
	fs := newFake(t, func(c *Config) {
		c.Now = clock
		c.OnRegistered = func(wire.Registered) { registered++ }
		c.OnPunch = func(wire.Punch) {}
	})
	fs.now = clock
	// Retransmission waits never end on their own: how long the flood
	// takes on a loaded machine must not use up the Connect's tries.
	fs.client.after = func(time.Duration) <-chan time.Time { return nil }
	attacker, _ := crypto.GenerateIdentity(nil)
	for i := range 3 * replayCacheSize {
		now = now.Add(time.Millisecond) // the flood spans most of the window
		if !fs.deliver(&wire.Punch{TxID: uint64(i), Peer: wire.PeerInfo{ID: attacker.ID()}}) {
			t.Fatal("punch not consumed")
		}
	}
	fs.deliver(&wire.Registered{TTL: 60, Refresh: 20})
	if registered != 1 {
		t.Fatal("the client dropped its Registered after a flood of Punches")
	}
	peerID, _ := crypto.GenerateIdentity(nil)
	done := make(chan error, 1)
	go func() {
		_, err := fs.client.ConnectPeer(context.Background(), peerID.ID())
		done <- err
	}()
	c, ok := fs.next().Body.(*wire.Connect)
	if !ok {
		t.Fatal("no connect sent")
	}
	for i := range replayCacheSize {
		fs.deliver(&wire.Punch{TxID: uint64(1<<40 + i), Peer: wire.PeerInfo{ID: attacker.ID()}})
	}
	fs.deliver(&wire.ConnectReply{TxID: c.TxID, Found: true, Peer: wire.PeerInfo{ID: peerID.ID()}})
	if err := <-done; err != nil {
		t.Fatalf("connect after a flood of Punches: %v", err)
	}
}
