package rendezvouscmd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/keymesh/keymesh/internal/testutil/debpkg"
)

// startAlt runs the command on 127.0.0.1 with --alt-listen on 127.0.0.2 and
// extra flags, and returns the primary and alternate addresses.
func startAlt(t *testing.T, extra ...string) (primary, alt netip.AddrPort) {
	t.Helper()
	p1, p2 := freeOnBoth(t), freeOnBoth(t)
	for p2 == p1 {
		p2 = freeOnBoth(t)
	}
	primary = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p1)
	alt = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), p2)
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuf
	done := make(chan int, 1)
	args := append([]string{"--listen", primary.String(), "--alt-listen", alt.String(),
		"--admin", "", "--key", filepath.Join(t.TempDir(), "k")}, extra...)
	go func() { done <- Main(ctx, args, &stdout, &stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("server did not stop")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stdout.String(), "connect string:") {
		if time.Now().After(deadline) {
			t.Fatalf("no connect string; stderr %q", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return primary, alt
}

// TestNatdiscoveryInterop runs coturn's turnutils_natdiscovery, a standard
// RFC 5780 client, against --alt-listen: it must find OTHER-ADDRESS and
// RESPONSE-ORIGIN and report mapping and filtering behaviour as it does
// against coturn (on loopback: endpoint-independent both). The old
// responder sent OTHER-ADDRESS only to padded requests, so this client,
// which does not pad, got none and reported nothing.
func TestNatdiscoveryInterop(t *testing.T) {
	bin := debpkg.Require(t, "turnutils_natdiscovery", "coturn")
	primary, alt := startAlt(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-m", "-f", "-p", fmt.Sprint(primary.Port()), primary.Addr().String()).CombinedOutput()
	if err != nil {
		t.Fatalf("turnutils_natdiscovery: %v\n%s", err, out)
	}
	for _, want := range []string{
		"Other addr: : " + alt.String(),
		"Response origin: : " + netip.AddrPortFrom(alt.Addr(), primary.Port()).String(), // mapping test 2
		"Response origin: : " + alt.String(),                                            // filtering test 2: change IP and port
		"NAT with Endpoint Independent Mapping!",
		"NAT with Endpoint Independent Filtering!",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("turnutils_natdiscovery output lacks %q:\n%s", want, out)
		}
	}
}

// TestAltSocketsRateLimited: the RFC 5780 answers (56 bytes to a bare
// 20-byte request) are what a reflection attack would want from these
// sockets, so every socket, alternates included, draws on one per-source
// budget. A burst of bare requests from one address, with rotating ports,
// gets at most the burst (plus the refill while the test runs) answered.
func TestAltSocketsRateLimited(t *testing.T) {
	const burst = 8
	primary, alt := startAlt(t, "--stun-rate", "1", "--stun-burst", fmt.Sprint(burst))
	targets := []netip.AddrPort{primary, alt, netip.AddrPortFrom(primary.Addr(), alt.Port()), netip.AddrPortFrom(alt.Addr(), primary.Port())}
	start := time.Now()
	var conns []*net.UDPConn
	for range 20 {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	sent := 0
	for _, c := range conns {
		for _, to := range targets {
			req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
			if _, err := c.WriteToUDPAddrPort(req.Raw, to); err != nil {
				t.Fatal(err)
			}
			sent++
		}
	}
	// Collect until the burst has come back (however slow the machine),
	// then a little longer for any answer beyond it.
	answers := 0
	buf := make([]byte, 1500)
	collect := func(wait time.Duration) {
		for _, c := range conns {
			_ = c.SetReadDeadline(time.Now().Add(wait))
			for {
				if _, err := c.Read(buf); err != nil {
					break
				}
				answers++
			}
		}
	}
	for deadline := time.Now().Add(30 * time.Second); answers < burst && time.Now().Before(deadline); {
		collect(20 * time.Millisecond)
	}
	collect(300 * time.Millisecond)
	allowed := burst + int(time.Since(start).Seconds()+1)
	t.Logf("%d bare Binding requests from one address to the four sockets: %d answered (budget %d)", sent, answers, allowed)
	if answers == 0 || answers > allowed {
		t.Fatalf("%d answers to %d requests from one address; the budget allows %d", answers, sent, allowed)
	}
}
