// Package meshtest runs a real rendezvous server and a real relay on
// loopback for tests of packages that need running nodes.
package meshtest

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/relay"
	"github.com/keymesh/keymesh/internal/rendezvous"
	"github.com/keymesh/keymesh/node"
)

// Start serves a rendezvous server and a relay on loopback until the test
// ends and returns the rendezvous connect string (node.Config.Server).
func Start(t testing.TB) string {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	keys, err := crypto.NewTicketKeys(1, map[byte][]byte{1: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rl, err := relay.New(relay.Config{Keys: keys, RateLimit: relay.RateLimit{Disabled: true}})
	if err != nil {
		t.Fatal(err)
	}
	relayConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	rz, err := rendezvous.New(rendezvous.Config{
		Identity: id,
		Registry: discovery.NewMemory(time.Now),
		Cookies:  crypto.NewCookieJar(secret, time.Now),
		Relays:   []string{relayConn.LocalAddr().String()},
	})
	if err != nil {
		t.Fatal(err)
	}
	rzConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { rl.Serve(ctx, relayConn); done <- struct{}{} }()
	go func() { rz.Serve(ctx, rzConn); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		relayConn.Close()
		rzConn.Close()
		<-done
		<-done
	})
	return fmt.Sprintf("%s#%s", rzConn.LocalAddr(), id.ID())
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
