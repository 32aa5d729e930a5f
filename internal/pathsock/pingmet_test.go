package pathsock

import (
	"context"
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
