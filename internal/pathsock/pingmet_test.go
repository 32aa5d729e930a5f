package pathsock

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// TestPingProbesAgainWhenMet: a Ping to a peer that does not know us yet
// (its Punch has not come) goes unanswered; when the peer learns of us
// and its first frame arrives, the Ping probes again at once and gets its
// answer, without waiting for its next retry (an hour here).
func TestPingProbesAgainWhenMet(t *testing.T) {
	r := startRelay(t, newTicketKeys(t), "127.0.0.1:0")
	a, b := newTestSock(t, nil), newTestSock(t, nil)
	for _, s := range []*testSock{a, b} {
		s.SetRelays([]string{r.addr.String()})
	}
	waitFor(t, 3*time.Second, "relay tickets", func() bool { return len(a.Tickets()) > 0 && len(b.Tickets()) > 0 })
	a.pingRetry = time.Hour
	if err := a.AddPeer(info(b), time.Now()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := a.Ping(ctx, b.ID())
		done <- err
	}()
	waitFor(t, 5*time.Second, "a's first probe", func() bool {
		a.pendMu.Lock()
		defer a.pendMu.Unlock()
		return len(a.pending) > 0
	})
	select {
	case err := <-done:
		t.Fatalf("the ping ended before b knew a: %v", err)
	default:
	}
	if err := b.AddPeer(info(a), time.Now()); err != nil { // b's Punch
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the ping failed after b met a: %v", err)
	}
}

// TestPunchedPeerProbesAtOnce: the peer that gets a Punch (AddPeer) from a
// peer it never heard from probes it through the relay at once, not at the
// punch's start (an hour away here): the asking peer's pending Ping, whose
// probe was dropped before, is answered then.
func TestPunchedPeerProbesAtOnce(t *testing.T) {
	r := startRelay(t, newTicketKeys(t), "127.0.0.1:0")
	a, b := newTestSock(t, nil), newTestSock(t, nil)
	for _, s := range []*testSock{a, b} {
		s.SetRelays([]string{r.addr.String()})
	}
	waitFor(t, 3*time.Second, "relay tickets", func() bool { return len(a.Tickets()) > 0 && len(b.Tickets()) > 0 })
	a.pingRetry = time.Hour
	later := time.Now().Add(time.Hour)
	if err := a.AddPeer(info(b), later); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := a.Ping(ctx, b.ID())
		done <- err
	}()
	waitFor(t, 5*time.Second, "a's first probe", func() bool {
		a.pendMu.Lock()
		defer a.pendMu.Unlock()
		return len(a.pending) > 0
	})
	if err := b.AddPeer(info(a), later); err != nil { // b's Punch, punching an hour away
		t.Fatal(err)
	}
	pa := b.peerByID(a.ID())
	pa.mu.Lock()
	probed := !pa.lastProbeR.IsZero()
	pa.mu.Unlock()
	if !probed {
		t.Fatal("b sent a no relay probe when introduced")
	}
	if err := <-done; err != nil {
		t.Fatalf("the ping failed after b was introduced to a: %v", err)
	}
}

// TestFirstContactProbesBack: a source address probed less than a second
// ago is not probed again when a frame comes from it, except for the
// peer's first frame ever (it dropped our probes until it learned of us),
// which is probed back at once.
func TestFirstContactProbesBack(t *testing.T) {
	a, b := newTestSock(t, nil), newTestSock(t, nil)
	if err := a.AddPeer(info(b), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	pr := a.peerByID(b.ID())
	addr := b.LocalAddrPort()
	now := time.Now()
	pr.mu.Lock()
	c := pr.cands[addr]
	if c == nil {
		pr.mu.Unlock()
		t.Fatalf("no candidate %v", addr)
	}
	c.lastSent = now.Add(-100 * time.Millisecond)
	pr.mu.Unlock()
	sent := func() int {
		pr.mu.Lock()
		defer pr.mu.Unlock()
		return c.unanswered
	}
	before := sent()
	a.noticeSource(pr, addr, now, false)
	if sent() != before {
		t.Fatal("a source probed 100 ms ago was probed again")
	}
	a.noticeSource(pr, addr, now, true)
	if sent() != before+1 {
		t.Fatal("the peer's first frame was not probed back at once")
	}
}

// TestPingFollowsRouteChange: a Ping whose probe went through a relay
// that no longer answers probes again when a direct path comes up under
// it, rather than waiting out its retry (an hour here).
func TestPingFollowsRouteChange(t *testing.T) {
	r := startRelay(t, newTicketKeys(t), "127.0.0.1:0")
	cut := func(s **testSock) func(*Config) {
		return func(c *Config) {
			c.DropDirect = func(netip.AddrPort) bool { return (*s).cut.Load() }
		}
	}
	var a, b *testSock
	a, b = newTestSock(t, cut(&a)), newTestSock(t, cut(&b))
	a.cut.Store(true)
	b.cut.Store(true)
	for _, s := range []*testSock{a, b} {
		s.SetRelays([]string{r.addr.String()})
	}
	waitFor(t, 3*time.Second, "relay tickets", func() bool { return len(a.Tickets()) > 0 && len(b.Tickets()) > 0 })
	start := time.Now()
	if err := a.AddPeer(info(b), start); err != nil {
		t.Fatal(err)
	}
	if err := b.AddPeer(info(a), start); err != nil {
		t.Fatal(err)
	}
	exchange(t, a, b, "over the relay")
	if path(a, b) != PathRelay {
		t.Fatalf("path %s, want the relay while direct is cut", path(a, b))
	}
	r.stop()
	a.pingRetry = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		st, err := a.Ping(ctx, b.ID())
		if err == nil && st.Path != PathDirect {
			err = fmt.Errorf("answered over %s, want direct", st.Path)
		}
		done <- err
	}()
	a.cut.Store(false)
	b.cut.Store(false)
	if err := <-done; err != nil {
		t.Fatalf("the ping did not follow the direct path that came up: %v", err)
	}
}

// TestLatePunchProbesAtOnce: a Punch whose start has passed (the rendezvous
// held it while this peer's home moved) punches at once, from AddPeer, not
// at the next maintenance tick; one whose start is ahead waits for it.
func TestLatePunchProbesAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start time.Duration
		want  bool
	}{{"start passed", -200 * time.Millisecond, true}, {"start ahead", time.Hour, false}} {
		a, b := newTestSock(t, nil), newTestSock(t, nil)
		if err := a.AddPeer(info(b), time.Now().Add(tc.start)); err != nil {
			t.Fatal(err)
		}
		pr := a.peerByID(b.ID())
		pr.mu.Lock()
		c := pr.cands[b.LocalAddrPort()]
		probed := c != nil && !c.lastSent.IsZero()
		pr.mu.Unlock()
		if probed != tc.want {
			t.Errorf("%s: candidate probed by AddPeer: %v, want %v", tc.name, probed, tc.want)
		}
	}
}
