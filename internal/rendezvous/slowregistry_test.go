package rendezvous_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/rendezvous"
	"github.com/keymesh/keymesh/internal/rzclient"
)

// gatedRegistry is a Memory registry behind a network: while the gate is
// shut, each Put waits until it opens (or its deadline passes), as a
// refresh waits for a busy Redis.
type gatedRegistry struct {
	discovery.Registry
	shut    atomic.Bool
	open    chan struct{}
	waiting atomic.Int32
}

func (g *gatedRegistry) Put(ctx context.Context, rec discovery.Record, ttl time.Duration) error {
	if g.shut.Load() {
		g.waiting.Add(1)
		defer g.waiting.Add(-1)
		select {
		case <-g.open:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.Registry.Put(ctx, rec, ttl)
}

// TestConnectWhileRefreshesWait: behind a registry across the network, a
// connect is answered while more refreshes than the in-process registry's
// reader count wait for the registry: a datagram waiting for the registry
// holds up no other.
func TestConnectWhileRefreshesWait(t *testing.T) {
	mem := discovery.NewMemory(nil)
	t.Cleanup(func() { _ = mem.Close() })
	gate := &gatedRegistry{Registry: mem, open: make(chan struct{})}
	srv := startServerWith(t, func(c *rendezvous.Config) {
		c.Registry = gate
		c.Workers = 0 // the default for a remote registry
		c.RegistryTimeout = time.Minute
	})
	a := startPeer(t, srv, srv.id, nil)
	b := startPeer(t, srv, srv.id, nil)
	a.waitRegistered(t)
	b.waitRegistered(t)

	// More waiting refreshes than an in-process registry gets readers.
	gate.shut.Store(true)
	defer close(gate.open)
	slow := 2 * max(4, 2*runtime.GOMAXPROCS(0))
	for range slow {
		startPeer(t, srv, srv.id, func(c *rzclient.Config) { c.Retransmit, c.MaxBackoff = time.Minute, time.Minute })
	}
	deadline := time.Now().Add(10 * time.Second)
	for int(gate.waiting.Load()) < slow {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d registrations reached the registry", gate.waiting.Load(), slow)
		}
		time.Sleep(10 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := a.client.ConnectPeer(ctx, b.id.ID())
	if err != nil || !r.Found {
		t.Fatalf("connect while %d refreshes wait for the registry: %+v, %v", gate.waiting.Load(), r, err)
	}
	b.waitPunch(t)
}

// pairedRegistry is a Memory registry whose lookups, once paired is set,
// each wait until another lookup waits too (or their deadline passes).
type pairedRegistry struct {
	discovery.Registry
	paired  atomic.Bool
	waiting atomic.Int32
	both    chan struct{}
}

func (g *pairedRegistry) Get(ctx context.Context, id crypto.PeerID) (discovery.Record, error) {
	if g.paired.Load() {
		if g.waiting.Add(1) == 2 {
			close(g.both)
		}
		select {
		case <-g.both:
		case <-ctx.Done():
			return discovery.Record{}, ctx.Err()
		}
	}
	return g.Registry.Get(ctx, id)
}

// TestConnectLookupsAtOnce: behind a registry across the network, a
// connect looks up its sender and its target at once (one round trip of
// waiting, not two): lookups that each wait for the other complete.
func TestConnectLookupsAtOnce(t *testing.T) {
	mem := discovery.NewMemory(nil)
	t.Cleanup(func() { _ = mem.Close() })
	reg := &pairedRegistry{Registry: mem, both: make(chan struct{})}
	srv := startServerWith(t, func(c *rendezvous.Config) {
		c.Registry = reg
		c.Workers = 0
		c.RegistryTimeout = time.Minute
	})
	// A sends its Connect once: a retransmission would pair with it.
	a := startPeer(t, srv, srv.id, func(c *rzclient.Config) { c.Retransmit, c.MaxBackoff = time.Minute, time.Minute })
	b := startPeer(t, srv, srv.id, nil)
	a.waitRegistered(t)
	b.waitRegistered(t)
	reg.paired.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := a.client.ConnectPeer(ctx, b.id.ID())
	if err != nil || !r.Found {
		t.Fatalf("connect whose two lookups wait for each other: %+v, %v", r, err)
	}
}
