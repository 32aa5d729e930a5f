package rendezvouscmd

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/netcheck"
	"github.com/keymesh/keymesh/internal/rzclient"
	"github.com/keymesh/keymesh/internal/testutil/ci"
)

// TestAltListenAnswersRFC5780 runs the server with a second address and
// checks a netcheck client can run every RFC 5780 test against it: the
// change requests are answered from the other sockets.
func TestAltListenAnswersRFC5780(t *testing.T) {
	p1, p2 := freeOnBoth(t), freeOnBoth(t)
	for p2 == p1 {
		p2 = freeOnBoth(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuf
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"--listen", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p1).String(), "--alt-listen", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), p2).String(),
			"--admin", "", "--key", filepath.Join(t.TempDir(), "k")}, &stdout, &stderr)
	}()
	re := regexp.MustCompile(`connect string: (\S+)\n`)
	deadline := time.Now().Add(5 * time.Second)
	var m []string
	for m = re.FindStringSubmatch(stdout.String()); m == nil; m = re.FindStringSubmatch(stdout.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no connect string; stderr %q", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	server, _, err := rzclient.ParseServer(m[1])
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	rep, err := (&netcheck.Client{Conn: c}).Check(cctx, server)
	if err != nil {
		t.Fatal(err)
	}
	// On loopback there is no NAT, and the change requests came back: the
	// filtering test needs answers from the alternate address and port.
	if !rep.UDP || rep.Mapping != netcheck.NoNAT || rep.Reflexive != c.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Fatalf("report %+v", rep)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
}

// freeOnBoth finds a UDP port free on 127.0.0.1 and 127.0.0.2.
func freeOnBoth(t *testing.T) uint16 {
	t.Helper()
	for i := 0; i < 50; i++ {
		a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
		if err != nil {
			ci.Skipf(t, "no 127.0.0.2 here: %v", err)
		}
		port := a.LocalAddr().(*net.UDPAddr).Port
		b, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		a.Close()
		if err == nil {
			b.Close()
			return uint16(port)
		}
	}
	t.Fatal("no port free on both loopback addresses")
	return 0
}
