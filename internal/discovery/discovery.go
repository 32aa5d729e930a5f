// Package discovery is the rendezvous server's peer registry: where each
// registered peer can be found, indexed by peer ID and by overlay address.
// It is soft state: every record expires unless its peer refreshes it, and a
// lost registry refills itself within one refresh interval.
//
// Two implementations share the Registry interface: Memory, the embedded
// default for a single instance, and Redis, which lets many rendezvous
// instances behind one anycast address share one index.
package discovery

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"

	"github.com/keymesh/keymesh/internal/wire"
)

// ErrNotFound is returned for a peer that is not registered (or expired).
var ErrNotFound = errors.New("peer not registered")

// ErrUnavailable wraps failures of the backing store (Redis down).
var ErrUnavailable = errors.New("registry unavailable")

// Policy says who may connect to a peer.
type Policy struct {
	// AllowAny admits every peer.
	AllowAny bool
	// Allowed lists the peers admitted when AllowAny is false.
	Allowed []crypto.PeerID
}

// Admits reports whether the policy lets from connect.
func (p Policy) Admits(from crypto.PeerID) bool {
	if p.AllowAny {
		return true
	}
	for _, a := range p.Allowed {
		if a == from {
			return true
		}
	}
	return false
}

// Record is what the registry knows of one peer.
type Record struct {
	ID crypto.PeerID
	// Reflexive is the peer's address as the rendezvous saw it (its NAT's
	// public mapping).
	Reflexive netip.AddrPort
	// Candidates are the addresses the peer reported itself (LAN addresses).
	Candidates []netip.AddrPort
	// Tickets are sealed relay tickets the peer publishes (opaque here).
	Tickets [][]byte
	// NAT is the peer's NAT mapping behaviour as it measured it (a wire
	// constant; opaque here).
	NAT wire.NAT
	// Policy says who may connect to the peer.
	Policy Policy
	// Instance names the rendezvous instance that took the registration.
	Instance string
	// Home is the mesh address (package mesh) of that instance, the one
	// holding the peer's flow; zero when the instance runs without a mesh.
	// Another instance sends datagrams for the peer through it.
	Home netip.AddrPort
	// Updated is when the registration was taken (the instance's clock).
	Updated time.Time
	// Sent is the send time (the peer's clock, in milliseconds) of the
	// Register that wrote the record; zero when unknown (a record written
	// by a version before it, or by a Put without one). A Put carrying a
	// Sent replaces a live record only if that record's Sent is earlier
	// or zero (see Registry.Put): a Register replayed to another instance
	// within the clock window, which that instance's replay cache has not
	// seen, cannot move the peer back to an old address or home.
	Sent time.Time
}

// Registry stores records with a time to live.
type Registry interface {
	// Put stores or refreshes rec; it expires after ttl. When rec.Sent is
	// set and the live record of rec.ID has a Sent not earlier than it,
	// Put stores nothing and returns ErrNotNewer; the comparison and the
	// write are one atomic step. A Put without Sent, or over a record
	// without one, is not compared.
	Put(ctx context.Context, rec Record, ttl time.Duration) error
	// Get returns the live record for id, or ErrNotFound.
	Get(ctx context.Context, id crypto.PeerID) (Record, error)
	// GetByAddr returns the live record whose overlay address is addr, or
	// ErrNotFound.
	GetByAddr(ctx context.Context, addr netip.Addr) (Record, error)
	// Delete removes a record (a peer going away cleanly).
	Delete(ctx context.Context, id crypto.PeerID) error
	// Len counts live records (approximately, for metrics).
	Len(ctx context.Context) (int, error)
	// Ping reports whether the backing store is reachable (for /healthz).
	Ping(ctx context.Context) error
	// Close releases resources.
	Close() error
}
