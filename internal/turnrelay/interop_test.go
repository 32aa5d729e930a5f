package turnrelay

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/coturn"
	"github.com/keymesh/keymesh/internal/testutil/debpkg"
)

// TestInteropCoturnClient drives our server with coturn's own client,
// turnutils_uclient, over UDP and TCP: REST-API credentials made from the
// shared secret, allocations, channel binds (or, with -s, permissions and
// Send/Data indications), and messages relayed to coturn's echo peer and
// back. The same runs against coturn's turnserver,
// at the same time on the same loopback, are the yardstick for loss.
func TestInteropCoturnClient(t *testing.T) {
	debpkg.Require(t, coturn.ClientProgram, coturn.Package)
	for _, prog := range []string{coturn.ServerProgram, coturn.PeerProgram} {
		debpkg.Require(t, prog, coturn.Package)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	t.Cleanup(cancel)
	lo := netip.MustParseAddr("127.0.0.1")
	const secret = "interop-shared-secret-0123456789"

	ours := startServer(t, 2, func(c *Config) {
		c.Secret = []byte(secret)
		c.MaxAllocationsPerUser = -1 // uclient leaves a probe allocation per session
	})

	port, err := coturn.FreePort(lo)
	if err != nil {
		t.Fatal(err)
	}
	theirs := netip.AddrPortFrom(lo, port)
	cs, err := coturn.StartServer(ctx, coturn.ServerConfig{
		Dir: t.TempDir(), Listen: theirs, Secret: secret, Realm: testRealm, Threads: 1,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cs.Stop)

	peerPort, err := coturn.FreePort(lo)
	if err != nil {
		t.Fatal(err)
	}
	peerAddr := netip.AddrPortFrom(lo, peerPort)
	peer, err := coturn.StartPeer(ctx, peerAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(peer.Stop)

	const clients, messages = 4, 100
	type run struct {
		server string
		tcp    bool
		send   bool
		addr   netip.AddrPort
		report coturn.Report
		out    []byte
		err    error
	}
	runs := []*run{
		{server: "ours", addr: netip.MustParseAddrPort(ours.udp)},
		{server: "ours", tcp: true, addr: netip.MustParseAddrPort(ours.tcp)},
		{server: "ours", send: true, addr: netip.MustParseAddrPort(ours.udp)},
		{server: "coturn", addr: theirs},
		{server: "coturn", tcp: true, addr: theirs},
		{server: "coturn", send: true, addr: theirs},
	}
	var wg sync.WaitGroup
	for i, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.report, r.out, r.err = coturn.RunClient(ctx, coturn.ClientConfig{
				Server: r.addr, TCP: r.tcp, Send: r.send, Peer: peerAddr,
				Secret: secret, User: fmt.Sprintf("interop%d", i),
				Clients: clients, Messages: messages, Size: 600, Interval: 10 * time.Millisecond,
			})
		}()
	}
	wg.Wait()

	byKey := map[string]*run{}
	for _, r := range runs {
		key := fmt.Sprintf("%s/tcp=%v/send=%v", r.server, r.tcp, r.send)
		byKey[key] = r
		if r.err != nil {
			t.Fatalf("%s: %v", key, r.err)
		}
		t.Logf("%s: sent %d, received %d, lost %d (%.2f%%), rtt %.2f ms, %d s",
			key, r.report.Sent, r.report.Received, r.report.Lost, r.report.LossPercent,
			r.report.AvgRTTms, r.report.TransmitSecs)
		if r.report.Sent != clients*messages {
			t.Errorf("%s: sent %d messages, want %d", key, r.report.Sent, clients*messages)
		}
		if r.report.Received == 0 {
			t.Errorf("%s: nothing came back through the relay", key)
		}
	}
	for _, mode := range []string{"tcp=false/send=false", "tcp=true/send=false", "tcp=false/send=true"} {
		o, c := byKey["ours/"+mode].report, byKey["coturn/"+mode].report
		// No more loss than coturn under the same load, give or take
		// one message of scheduling noise.
		if o.Lost > c.Lost+1 {
			t.Errorf("%s: our relay lost %d messages, coturn %d", mode, o.Lost, c.Lost)
		}
	}
	// The traffic really went through our server: one real and one probe
	// allocation per uclient session, for each of the three runs.
	if got := value(t, ours.metrics.allocationsTotal); got < 3*2*clients {
		t.Errorf("our server made %v allocations, want at least %d", got, 3*2*clients)
	}
	if got := authFailures(t, ours, reasonIntegrity) + authFailures(t, ours, reasonExpired) +
		authFailures(t, ours, reasonMalformed); got != 0 {
		t.Errorf("uclient's REST credentials failed %v times on our server", got)
	}
}
