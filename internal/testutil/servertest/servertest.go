// Package servertest runs a real rendezvous server and a real relay in this
// process on sockets the caller opened (loopback, or a lab host's), for
// tests and tools that need servers but not the binaries. It does not
// import node, so node's own tests can use it too (package meshtest adds
// the nodes).
package servertest

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/relay"
	"github.com/keymesh/keymesh/internal/rendezvous"
)

// Servers are a rendezvous and a relay serving until Close.
type Servers struct {
	// Connect is the rendezvous connect string (node.Config.Server).
	Connect string

	cancel context.CancelFunc
	conns  []net.PacketConn
	wg     sync.WaitGroup
}

// Serve starts a relay on relayConn, its per-source limits off (they would
// cap one flow far below what loopback carries), and a rendezvous on rzConn
// with a memory registry that hands out that relay. adjust, when not nil,
// changes the rendezvous config first. Close stops both and closes the
// sockets; on an error the sockets stay the caller's.
func Serve(relayConn, rzConn net.PacketConn, adjust func(*rendezvous.Config)) (*Servers, error) {
	key := make([]byte, 32)
	rand.Read(key)
	keys, err := crypto.NewTicketKeys(1, map[byte][]byte{1: key}, nil)
	if err != nil {
		return nil, err
	}
	rl, err := relay.New(relay.Config{Keys: keys, RateLimit: relay.RateLimit{Disabled: true}})
	if err != nil {
		return nil, err
	}
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	cfg := rendezvous.Config{
		Identity: id,
		Registry: discovery.NewMemory(time.Now),
		Cookies:  crypto.NewCookieJar(secret, time.Now),
		Relays:   []string{relayConn.LocalAddr().String()},
	}
	if adjust != nil {
		adjust(&cfg)
	}
	rz, err := rendezvous.New(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Servers{Connect: fmt.Sprintf("%s#%s", rzConn.LocalAddr(), id.ID()),
		cancel: cancel, conns: []net.PacketConn{relayConn, rzConn}}
	s.wg.Go(func() { rl.Serve(ctx, relayConn) })
	s.wg.Go(func() { rz.Serve(ctx, rzConn) })
	return s, nil
}

// Close stops the servers, closes their sockets and waits until both have
// returned.
func (s *Servers) Close() {
	s.cancel()
	for _, c := range s.conns {
		c.Close()
	}
	s.wg.Wait()
}
