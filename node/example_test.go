package node_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log"
	"net"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/relay"
	"github.com/keymesh/keymesh/internal/rendezvous"
	"github.com/keymesh/keymesh/node"
)

// Two nodes on one machine: one listens, the other dials it by peer ID and
// gets an echo. The rendezvous server and the relay run in-process on
// loopback; in real life they run elsewhere (cmd/rendezvous, cmd/relay) and
// Config.Server is the connect string the rendezvous prints.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	server, stop := startServers(ctx)
	defer stop()

	newNode := func() *node.Node {
		seed := make([]byte, 32)
		rand.Read(seed) // or Config.KeyFile, made with node.GenerateKey
		n, err := node.New(ctx, node.Config{Seed: seed, Server: server, ListenAddr: "127.0.0.1:0", AllowAny: true})
		if err != nil {
			log.Fatal(err)
		}
		return n
	}
	alice, bob := newNode(), newNode()
	defer alice.Close()
	defer bob.Close()

	// Bob echoes the first stream.
	go func() {
		c, err := bob.Listen().Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()

	// Alice dials Bob by his peer ID (his overlay address works too).
	c, err := alice.Dial(ctx, bob.ID())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "hello, bob")
	c.(*node.Conn).CloseWrite()
	reply, err := io.ReadAll(c)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(reply))
	// Output: hello, bob
}

// startServers runs a rendezvous server and a relay on loopback and returns
// the rendezvous connect string.
func startServers(ctx context.Context) (string, func()) {
	must := func(err error) {
		if err != nil {
			log.Fatal(err)
		}
	}
	key := make([]byte, 32)
	rand.Read(key)
	keys, err := crypto.NewTicketKeys(1, map[byte][]byte{1: key}, nil)
	must(err)
	rl, err := relay.New(relay.Config{Keys: keys})
	must(err)
	relayConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(err)

	id, err := crypto.GenerateIdentity(nil)
	must(err)
	secret := make([]byte, 32)
	rand.Read(secret)
	rz, err := rendezvous.New(rendezvous.Config{
		Identity: id,
		Registry: discovery.NewMemory(time.Now),
		Cookies:  crypto.NewCookieJar(secret, time.Now),
		Relays:   []string{relayConn.LocalAddr().String()},
	})
	must(err)
	rzConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(err)

	ctx, cancel := context.WithCancel(ctx)
	go rl.Serve(ctx, relayConn)
	go rz.Serve(ctx, rzConn)
	return fmt.Sprintf("%s#%s", rzConn.LocalAddr(), id.ID()), func() {
		cancel()
		relayConn.Close()
		rzConn.Close()
	}
}
