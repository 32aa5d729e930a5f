package labrun

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/natlab"
)

// TestServers starts the lab's servers and checks they serve: the connect
// string names the server's address, both admin endpoints answer, and a
// relay restart brings the relay back.
func TestServers(t *testing.T) {
	needRoot(t)
	ctx := testContext(t, time.Minute)
	lab := startLab(t, ctx)
	if !strings.HasPrefix(lab.Connect, lab.Server.Addr.String()+":3478#") {
		t.Fatalf("connect string %q does not name %s:3478", lab.Connect, lab.Server.Addr)
	}
	for _, s := range []string{"rendezvous", "relay"} {
		m, err := lab.Metrics(ctx, s)
		if err != nil || !strings.Contains(m, "keymesh_") {
			t.Fatalf("%s metrics: %v (%d bytes)", s, err, len(m))
		}
	}
	if lab.StreamURL == "" {
		t.Log("the relay binary has no --tls-listen: no stream relay in the lab (udp-blocked peers cannot register)")
	} else {
		// A site without UDP reaches the stream relay over TCP.
		s, err := lab.AddSite(ctx, "noudp", natlab.UDPBlocked)
		if err != nil {
			t.Fatal(err)
		}
		c, err := s.Host().DialTCP(ctx, netip.AddrPortFrom(lab.Server.Addr, 443))
		if err != nil {
			t.Fatalf("stream relay %s from a udp-blocked site: %v", lab.StreamURL, err)
		}
		c.Close()
		t.Logf("stream relay %s reachable from a udp-blocked site", lab.StreamURL)
	}
	start := time.Now()
	if err := lab.RestartRelay(ctx, true, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("relay restarted in %s", time.Since(start).Round(time.Millisecond))
}
