package node

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/rendezvous"
)

// TestJoinToken: against a rendezvous that requires a join token (what the
// Terraform deploys by default), a node with the token registers and one
// without it is refused.
func TestJoinToken(t *testing.T) {
	token := []byte("a-join-token-of-some-length")
	m := startMeshWith(t, func(c *rendezvous.Config) { c.JoinToken = token })
	a := m.newNode(func(c *Config) { c.JoinToken = token })
	if !a.Status().Registered {
		t.Fatalf("the node with the token is not registered: %+v", a.Status())
	}
	seed := make([]byte, 32)
	rand.Read(seed)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	n, err := New(ctx, Config{Seed: seed, Server: m.server, ListenAddr: "127.0.0.1:0"})
	if err == nil {
		n.Close()
		t.Fatal("a node without the join token registered")
	}
	t.Logf("without the token: %v", err)
}
