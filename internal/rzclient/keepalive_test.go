package rzclient

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// fireWait waits until the client arms a wait of d beyond the first n
// such waits, fires the newest one, and returns the new count.
func fireWait(t *testing.T, clk *fakeClock, d time.Duration, n int) int {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		clk.mu.Lock()
		var last chan time.Time
		count := 0
		for i, w := range clk.waits {
			if w == d {
				count++
				last = clk.chans[i]
			}
		}
		clk.mu.Unlock()
		if count > n {
			last <- time.Time{}
			return count
		}
		select {
		case <-clk.armed:
		case <-deadline:
			t.Fatalf("the client armed no new wait of %v within 5 s", d)
		}
	}
}

// count returns how many waits of d the client armed.
func count(clk *fakeClock, d time.Duration) int {
	n := 0
	for _, w := range clk.recorded() {
		if w == d {
			n++
		}
	}
	return n
}

// runKeepalives runs fs's client on clk (jitter drawn at the middle),
// answers its first Register as instance, and waits until the client arms
// its first keepalive interval ka. The registration's own retransmission
// wait (rto, the client's Retransmit) was armed before it: it returns rto
// and how many waits of rto are armed.
func runKeepalives(t *testing.T, fs *fakeServer, clk *fakeClock, ka time.Duration, instance string) (rto time.Duration, armed int) {
	t.Helper()
	fs.client.after = clk.after
	fs.client.jitter = func() float64 { return 0.5 }
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go fs.client.Run(ctx)
	if _, ok := fs.next().Body.(*wire.Register); !ok {
		t.Fatal("Run did not register first")
	}
	fs.deliver(&wire.Registered{TTL: 60, Refresh: 20, Instance: instance})
	rto = fs.client.cfg.Retransmit
	for count(clk, ka) == 0 {
		select {
		case <-clk.armed:
		case <-time.After(5 * time.Second):
			t.Fatal("no keepalive interval armed within 5 s of the registration")
		}
	}
	return rto, count(clk, rto)
}

// TestKeepaliveMissesReregister: between registrations the client sends a
// Keepalive every Config.Keepalive (on the injected clock); an answered
// one waits for the next interval, an unanswered one is repeated after a
// retransmission timeout, and after keepaliveMisses unanswered ones in a
// row the client registers, long before the refresh.
func TestKeepaliveMissesReregister(t *testing.T) {
	const ka = time.Second
	fs := newFake(t, func(c *Config) { c.Keepalive = ka })
	clk := newFakeClock()
	// Each round waits an interval, sends, and waits a retransmission
	// timeout (Retransmit, 20 ms here; jitter drawn at the middle) for the
	// answer.
	rto, m := runKeepalives(t, fs, clk, ka, "r1")
	n := 0
	send := func(d time.Duration, what wire.MsgType) {
		t.Helper()
		if d == ka {
			n = fireWait(t, clk, ka, n)
		} else {
			m = fireWait(t, clk, rto, m)
		}
		if got := fs.next().Body.Type(); got != what {
			t.Fatalf("after a wait of %v the client sent %s, want %s", d, got, what)
		}
	}
	send(ka, wire.MsgKeepalive)
	fs.deliver(&wire.KeepaliveAck{Instance: "r1"})
	// Answered: the next one only after a whole interval.
	m = fireWait(t, clk, rto, m)
	select {
	case msg := <-fs.sent:
		t.Fatalf("sent %s right after an answered keepalive", msg.Body.Type())
	case <-time.After(20 * time.Millisecond):
	}
	send(ka, wire.MsgKeepalive)
	// Unanswered: again after a retransmission timeout, then a Register.
	for range keepaliveMisses - 1 {
		send(rto, wire.MsgKeepalive)
	}
	fireWait(t, clk, rto, m)
	if _, ok := fs.next().Body.(*wire.Register); !ok {
		t.Fatalf("after %d unanswered keepalives the client did not register", keepaliveMisses)
	}
	for _, w := range clk.recorded() {
		if w == 20*time.Second {
			return
		}
	}
	t.Fatal("no refresh wait was armed alongside the keepalives")
}

// TestKeepaliveOtherInstanceReregisters: an answer from another instance
// than the registration's (the front door moved our flow: our home died)
// registers again at once, at most once per epochKickGap; the same
// instance does not, nor does an answer sealed by another key.
func TestKeepaliveOtherInstanceReregisters(t *testing.T) {
	var offset atomic.Int64
	fs := newFake(t, func(c *Config) {
		c.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	})
	c := fs.client
	fs.deliver(&wire.Registered{TTL: 60, Refresh: 20, Instance: "r1-rendezvous", Epoch: 1})
	fs.deliver(&wire.KeepaliveAck{Instance: "r1-rendezvous", Epoch: 1})
	if kicked(c) {
		t.Fatal("an answer from our own instance started a registration")
	}
	other, _ := crypto.GenerateIdentity(nil)
	k, _ := other.SharedKey(c.me)
	forged := wire.SealFrame(nil, other.ID(), k, wire.Message{Time: time.Now().UnixMilli(), Body: &wire.KeepaliveAck{Instance: "r2-rendezvous", Epoch: 1}})
	c.HandleFrame(forged, serverAddr)
	if kicked(c) {
		t.Fatal("an answer sealed by another key started a registration")
	}
	fs.deliver(&wire.KeepaliveAck{Instance: "r2-rendezvous", Epoch: 1})
	if !kicked(c) {
		t.Fatal("an answer from another instance did not start a registration")
	}
	fs.deliver(&wire.KeepaliveAck{Instance: "r2-rendezvous", Epoch: 1})
	if kicked(c) {
		t.Fatal("a second answer from another instance within epochKickGap started a registration")
	}
	offset.Store(int64(epochKickGap))
	fs.deliver(&wire.KeepaliveAck{Instance: "r2-rendezvous", Epoch: 1})
	if !kicked(c) {
		t.Fatal("still answered by another instance after epochKickGap: no registration")
	}
	// A changed epoch in a keepalive answer (a registry that came back
	// empty) registers again too.
	offset.Store(int64(3 * epochKickGap))
	fs.deliver(&wire.Registered{TTL: 60, Refresh: 20, Instance: "r2-rendezvous", Epoch: 1})
	fs.deliver(&wire.KeepaliveAck{Instance: "r2-rendezvous", Epoch: 2})
	if !kicked(c) {
		t.Fatal("a changed epoch in a keepalive answer did not start a registration")
	}
}

// TestConnectResentOnRegistered: a Connect waiting out its backoff (its
// last send lost with a dead instance) goes again at once when the client
// registers (with the instance that now holds its flow), without a timer.
func TestConnectResentOnRegistered(t *testing.T) {
	fs := newFake(t, func(c *Config) { c.Retransmit = time.Hour })
	clk := newFakeClock()
	fs.client.after = clk.after
	peerID, _ := crypto.GenerateIdentity(nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go fs.client.ConnectPeer(ctx, peerID.ID())
	first, ok := fs.next().Body.(*wire.Connect)
	if !ok {
		t.Fatal("no connect sent")
	}
	select {
	case <-clk.armed:
	case <-time.After(5 * time.Second):
		t.Fatal("the connect armed no retransmission wait")
	}
	fs.deliver(&wire.Registered{TTL: 60, Refresh: 20, Instance: "r2"})
	again, ok := fs.next().Body.(*wire.Connect)
	if !ok || again.TxID != first.TxID {
		t.Fatalf("after a registration: %+v, want the same connect again", again)
	}
	// The fake clock fired no wait: the resend came from the registration.
}

// TestKeepaliveOldServerNoReregister: a server that never answered a
// keepalive (one from before them drops them) is not taken for dead: the
// unanswered keepalives start no registration.
func TestKeepaliveOldServerNoReregister(t *testing.T) {
	const ka = time.Second
	fs := newFake(t, func(c *Config) { c.Keepalive = ka })
	clk := newFakeClock()
	rto, m := runKeepalives(t, fs, clk, ka, "old")
	n := 0
	for range 2 {
		n = fireWait(t, clk, ka, n)
		for range keepaliveMisses {
			if got := fs.next().Body.Type(); got != wire.MsgKeepalive {
				t.Fatalf("sent %s, want a keepalive", got)
			}
			m = fireWait(t, clk, rto, m)
		}
	}
	select {
	case msg := <-fs.sent:
		t.Fatalf("sent %s after unanswered keepalives to a server that never answered one", msg.Body.Type())
	case <-time.After(20 * time.Millisecond):
	}
}

// TestKeepaliveIntervalFromAnswer: on the injected clock, the next
// interval starts when the answer arrives, not when the retransmission
// timeout the keepalive armed runs out: keepalives go out every
// Config.Keepalive (plus a round trip), not every Keepalive plus
// Retransmit, so a peer whose home died notices within about Keepalive.
func TestKeepaliveIntervalFromAnswer(t *testing.T) {
	const ka = time.Second
	fs := newFake(t, func(c *Config) { c.Keepalive = ka; c.Retransmit = 250 * time.Millisecond })
	clk := newFakeClock()
	rto, _ := runKeepalives(t, fs, clk, ka, "r1")
	n := fireWait(t, clk, ka, 0)
	if got := fs.next().Body.Type(); got != wire.MsgKeepalive {
		t.Fatalf("sent %s, want a keepalive", got)
	}
	fs.deliver(&wire.KeepaliveAck{Instance: "r1"})
	// No wait fires: the answer alone starts the next interval.
	deadline := time.After(5 * time.Second)
	for count(clk, ka) <= n {
		select {
		case <-clk.armed:
		case <-deadline:
			t.Fatalf("no new interval of %v armed after the answer without the %v timeout firing", ka, rto)
		}
	}
	fireWait(t, clk, ka, n)
	if got := fs.next().Body.Type(); got != wire.MsgKeepalive {
		t.Fatalf("one interval after the answer the client sent %s, want a keepalive", got)
	}
}
