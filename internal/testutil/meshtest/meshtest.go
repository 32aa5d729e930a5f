// Package meshtest runs a real rendezvous server and a real relay on
// loopback (package servertest) and nodes against them, for tests of
// packages that need running nodes.
package meshtest

import (
	"context"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/servertest"
	"github.com/keymesh/keymesh/node"
)

// Start serves a rendezvous server and a relay on loopback until the test
// ends and returns the rendezvous connect string (node.Config.Server).
func Start(t testing.TB) string {
	t.Helper()
	relayConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	rzConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		relayConn.Close()
		t.Fatal(err)
	}
	s, err := servertest.Serve(relayConn, rzConn, nil)
	if err != nil {
		relayConn.Close()
		rzConn.Close()
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s.Connect
}

// Node starts a node on loopback that admits sessions from any peer, and
// closes it when the test ends.
func Node(t testing.TB, server string) *node.Node {
	t.Helper()
	seed := make([]byte, 32)
	rand.Read(seed)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := node.New(ctx, node.Config{Seed: seed, Server: server, ListenAddr: "127.0.0.1:0", AllowAny: true, NoReports: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}
