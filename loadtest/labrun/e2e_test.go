package labrun

import (
	"context"
	"encoding/hex"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/natlab"
)

// Transfer sizes and pace of the data-path tests: 64 MiB at 8 MiB/s takes
// about 8 s, so an event at a quarter of it lands two seconds in, well
// inside the transfer.
const (
	e2eSize = 64 << 20
	e2eRate = 8 << 20
	e2eAt   = e2eSize / 4
)

// startPeers starts A in ha and B in hb (B allows A) and waits until both
// are registered.
func startPeers(t *testing.T, ctx context.Context, lab *Lab, ha, hb *natlab.Host, cfg PeerConfig) (*Peer, *Peer) {
	t.Helper()
	ka, err := lab.NewKey("a")
	if err != nil {
		t.Fatal(err)
	}
	cb := cfg
	cb.Name, cb.Allow = "b", []string{ka.ID}
	b, err := lab.StartPeer(ctx, hb, cb)
	if err != nil {
		t.Fatal(err)
	}
	ca := cfg
	ca.Name, ca.Key = "a", ka
	a, err := lab.StartPeer(ctx, ha, ca)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, p := range []*Peer{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.WaitRegistered(ctx, 15*time.Second); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return a, b
}

// aliceAndBob adds the sites "alice" behind aType and "bob" behind bType,
// and starts peers A and B in them (startPeers).
func aliceAndBob(t *testing.T, ctx context.Context, lab *Lab, aType, bType natlab.NATType, cfg PeerConfig) (sa, sb *natlab.Site, a, b *Peer) {
	t.Helper()
	sa, err := lab.AddSite(ctx, "alice", aType)
	if err != nil {
		t.Fatal(err)
	}
	sb, err = lab.AddSite(ctx, "bob", bType)
	if err != nil {
		t.Fatal(err)
	}
	a, b = startPeers(t, ctx, lab, sa.Host(), sb.Host(), cfg)
	return sa, sb, a, b
}

// untilPath pings from a to b until a reply comes over path ("direct" or
// "relay") or timeout passes, and returns that reply.
func untilPath(t *testing.T, ctx context.Context, a, b *Peer, path string, timeout time.Duration) PingReply {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var got *PingReply
	replies, err := a.Ping(ctx, b.ID, PingOptions{Interval: 100 * time.Millisecond, Timeout: 5 * time.Second}, func(r PingReply) bool {
		if r.OK() && r.Path == path {
			got = &r
			return false
		}
		return true
	})
	if got == nil {
		t.Fatalf("no reply over %s from %s within %s (err %v); replies: %+v", path, b.Name, timeout, err, replies)
	}
	return *got
}

// pathOf returns the path a's status shows to b.
func pathOf(t *testing.T, ctx context.Context, a, b *Peer) string {
	t.Helper()
	ps, ok, err := a.PeerStatus(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return ""
	}
	return ps.Path
}

// relayBytes returns the bytes the (current) relay process forwarded.
func relayBytes(t *testing.T, ctx context.Context, lab *Lab) float64 {
	t.Helper()
	v, err := lab.MetricSum(ctx, "relay", "keymesh_relay_forwarded_bytes_total")
	if err != nil {
		t.Fatalf("relay metrics: %v", err)
	}
	return v
}

// sessions counts the sessions a daemon's log says it accepted and ended
// (it logs both at debug level).
func sessions(t *testing.T, p *Peer) (accepted, ended int) {
	t.Helper()
	b, err := os.ReadFile(p.Proc.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "session accepted"), strings.Count(string(b), "session ended")
}

func checkTransfer(t *testing.T, res TransferResult, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("transfer: %v", err)
	}
	if !res.OK() {
		t.Fatalf("transfer corrupted: sent %d bytes sha256 %s, received %d bytes sha256 %s",
			res.Sent, hex.EncodeToString(res.SentSum[:]), res.Received, hex.EncodeToString(res.ReceivedSum[:]))
	}
	t.Logf("transfer: %d MiB in %s (%.1f MiB/s), sha256 %s on both ends", res.Sent>>20, res.Took.Round(time.Millisecond),
		float64(res.Sent)/(1<<20)/res.Took.Seconds(), hex.EncodeToString(res.SentSum[:8]))
}

// TestCutDirectMidTransfer: two port-restricted sites on a direct path;
// UDP between their public addresses is cut while A pipes 64 MiB to B. The
// transfer completes over the relay with the same SHA-256, and status shows
// the relay.
func TestCutDirectMidTransfer(t *testing.T) {
	needRoot(t)
	ctx := testContext(t, 90*time.Second)
	lab := startLab(t, ctx)
	sa, sb, a, b := aliceAndBob(t, ctx, lab, natlab.PortRestricted, natlab.PortRestricted, PeerConfig{})
	r := untilPath(t, ctx, a, b, "direct", 15*time.Second)
	t.Logf("direct path to %s", r.Remote)
	before := relayBytes(t, ctx, lab)

	src := NewSource(e2eSize, e2eRate, 1)
	cut := make(chan time.Time, 1)
	var restore func() error
	var cutErr error
	src.At(e2eAt, func() {
		restore, cutErr = lab.Net.CutUDP(ctx, sa.PublicAddr, sb.PublicAddr)
		cut <- time.Now()
	})
	var fallback time.Duration
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case at := <-cut:
			if cutErr != nil {
				return
			}
			// The path must fall back to the relay while the transfer
			// goes on.
			for time.Since(at) < 10*time.Second && ctx.Err() == nil {
				ps, ok, err := a.PeerStatus(ctx, b.ID)
				if err == nil && ok && ps.Path == "relay" {
					fallback = time.Since(at)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		case <-ctx.Done():
		}
	}()
	res, err := Transfer(ctx, a, b, src, 60*time.Second)
	wg.Wait()
	if cutErr != nil {
		t.Fatalf("cut: %v", cutErr)
	}
	if restore == nil {
		t.Fatal("the transfer ended before the cut")
	}
	defer restore()
	checkTransfer(t, res, err)
	if fallback == 0 {
		t.Fatalf("status never showed the relay within 10 s of the cut (now %q)", pathOf(t, ctx, a, b))
	}
	t.Logf("fell back to the relay %s after the cut", fallback.Round(time.Millisecond))
	if p := pathOf(t, ctx, a, b); p != "relay" {
		t.Fatalf("after the transfer, with UDP still cut, status shows %q, want relay", p)
	}
	// What came after the cut (three quarters) went through the relay.
	if got := relayBytes(t, ctx, lab) - before; got < 0.6*e2eSize {
		t.Fatalf("the relay forwarded %.1f MiB during the transfer, want most of the %d MiB after the cut", got/(1<<20), e2eSize*3/4>>20)
	}
}

// TestRelayRestartMidTransfer: both peers relay only (--no-direct); the
// relay is killed and started again (same ticket key file) while A pipes
// 64 MiB to B. The transfer completes with the same SHA-256.
func TestRelayRestartMidTransfer(t *testing.T) {
	needRoot(t)
	ctx := testContext(t, 90*time.Second)
	lab := startLab(t, ctx)
	_, _, a, b := aliceAndBob(t, ctx, lab, natlab.PortRestricted, natlab.Symmetric, PeerConfig{NoDirect: true})
	untilPath(t, ctx, a, b, "relay", 15*time.Second)

	src := NewSource(e2eSize, e2eRate, 2)
	restarted := make(chan error, 1)
	src.At(e2eAt, func() {
		restarted <- lab.RestartRelay(ctx, true, 500*time.Millisecond)
	})
	res, err := Transfer(ctx, a, b, src, 60*time.Second)
	select {
	case rerr := <-restarted:
		if rerr != nil {
			t.Fatalf("restart the relay: %v", rerr)
		}
	default:
		t.Fatal("the transfer ended before the relay restart")
	}
	checkTransfer(t, res, err)
	if p := pathOf(t, ctx, a, b); p != "relay" {
		t.Fatalf("status shows %q with --no-direct, want relay", p)
	}
	// The restarted relay (its counters start at zero) carried the rest.
	if got := relayBytes(t, ctx, lab); got < 0.6*e2eSize {
		t.Fatalf("the restarted relay forwarded %.1f MiB, want most of the %d MiB after the restart", got/(1<<20), e2eSize*3/4>>20)
	}
	if acc, ended := sessions(t, b); acc != 1 || ended != 0 {
		t.Fatalf("B's log shows %d sessions accepted and %d ended, want one session throughout", acc, ended)
	}
}

// TestAddressChangeMidTransfer: A's host is renumbered in its LAN (a new
// address, so a new NAT mapping) while it pipes 64 MiB to B. The one stream
// carries everything (the pipe never restarts) with the same SHA-256.
func TestAddressChangeMidTransfer(t *testing.T) {
	needRoot(t)
	ctx := testContext(t, 90*time.Second)
	lab := startLab(t, ctx)
	sa, _, a, b := aliceAndBob(t, ctx, lab, natlab.PortRestricted, natlab.FullCone, PeerConfig{})
	untilPath(t, ctx, a, b, "direct", 15*time.Second)

	h := sa.Host()
	old := h.CurrentAddr()
	next := h.NextLANAddr()
	src := NewSource(e2eSize, e2eRate, 3)
	moved := make(chan error, 1)
	src.At(e2eAt, func() { moved <- h.SetAddr(ctx, next) })
	res, err := Transfer(ctx, a, b, src, 60*time.Second)
	select {
	case merr := <-moved:
		if merr != nil {
			t.Fatalf("renumber: %v", merr)
		}
	default:
		t.Fatal("the transfer ended before the address change")
	}
	t.Logf("%s moved from %s to %s mid-transfer", h.Name, old, next.Addr())
	checkTransfer(t, res, err)
	if acc, ended := sessions(t, b); acc != 1 || ended != 0 {
		t.Fatalf("B's log shows %d sessions accepted and %d ended, want one session throughout (no reconnect)", acc, ended)
	}
	// Still one session: a ping goes through without a new handshake
	// being needed, and the daemon knows its new address.
	r := untilPath(t, ctx, a, b, "direct", 15*time.Second)
	t.Logf("after the move: direct to %s", r.Remote)
	st, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range st.Local {
		if ap, err := netip.ParseAddrPort(l); err == nil && ap.Addr() == next.Addr() {
			found = true
		} else if ad, err := netip.ParseAddr(l); err == nil && ad == next.Addr() {
			found = true
		}
	}
	if !found {
		t.Errorf("status local addresses %v lack the new address %s", st.Local, next.Addr())
	}
}

// TestSameNAT: two peers behind one NAT reach each other directly over
// their LAN (Linux does not hairpin, so only the LAN candidate can work).
func TestSameNAT(t *testing.T) {
	needRoot(t)
	ctx := testContext(t, 60*time.Second)
	lab := startLab(t, ctx)
	s, err := lab.AddSite(ctx, "home", natlab.SameNAT)
	if err != nil {
		t.Fatal(err)
	}
	a, b := startPeers(t, ctx, lab, s.Hosts[0], s.Hosts[1], PeerConfig{})
	r := untilPath(t, ctx, a, b, "direct", 15*time.Second)
	ap, err := netip.ParseAddrPort(r.Remote)
	if err != nil {
		t.Fatalf("remote %q: %v", r.Remote, err)
	}
	if !s.LAN.Contains(ap.Addr()) || ap.Addr() != s.Hosts[1].CurrentAddr() {
		t.Fatalf("direct path to %s, want B's LAN address %s (in %s)", ap, s.Hosts[1].CurrentAddr(), s.LAN)
	}
	t.Logf("direct over the LAN to %s", ap)
	if p := pathOf(t, ctx, a, b); p != "direct" {
		t.Fatalf("status shows %q, want direct", p)
	}
}
