package rzclient

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// kicked reports whether the client was asked to register again, and
// clears the request.
func kicked(c *Client) bool {
	select {
	case <-c.kick:
		return true
	default:
		return false
	}
}

// TestEpochChangeReregisters: an answer sealed by the server whose epoch
// differs from the last registers again at once (a restarted server lost
// our record); the same epoch, a first epoch and a Registered do not; and
// epoch changes start at most one registration per epochKickGap on the
// client's clock.
func TestEpochChangeReregisters(t *testing.T) {
	var offset atomic.Int64
	fs := newFake(t, func(c *Config) {
		c.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	})
	c := fs.client
	fs.deliver(&wire.Registered{TTL: 60, Refresh: 20, Epoch: 1})
	if kicked(c) || c.Status().Epoch != 1 {
		t.Fatalf("first epoch: kicked or not recorded (%x)", c.Status().Epoch)
	}
	fs.deliver(&wire.ConnectReply{TxID: 1, Epoch: 1})
	fs.deliver(&wire.Punch{TxID: 2, Epoch: 1})
	if kicked(c) {
		t.Fatal("the same epoch started a registration")
	}
	fs.deliver(&wire.Punch{TxID: 3}) // an older server: no epoch
	if kicked(c) || c.Status().Epoch != 1 {
		t.Fatal("an answer without an epoch changed something")
	}
	fs.deliver(&wire.Punch{TxID: 4, Epoch: 2})
	if !kicked(c) || c.Status().Epoch != 2 {
		t.Fatalf("a changed epoch in a Punch did not start a registration (epoch %x)", c.Status().Epoch)
	}
	// Answers of the old and the new lifetime, alternating (a replay),
	// within the gap: no second registration.
	fs.deliver(&wire.Error{Code: wire.ErrCodeRateLimited, For: wire.MsgConnect, Epoch: 1})
	if kicked(c) || c.Status().Epoch != 2 {
		t.Fatal("a second epoch change within epochKickGap started a registration")
	}
	offset.Store(int64(epochKickGap))
	fs.deliver(&wire.ConnectReply{TxID: 5, Epoch: 1})
	if !kicked(c) || c.Status().Epoch != 1 {
		t.Fatal("an epoch change after epochKickGap did not start a registration")
	}
	// A Registered with a new epoch confirms a registration made there.
	fs.deliver(&wire.Registered{TTL: 60, Refresh: 20, Epoch: 3})
	if kicked(c) || c.Status().Epoch != 3 {
		t.Fatal("a Registered with a new epoch started another registration")
	}
}

// TestEpochSpoofed: an epoch change in a frame sealed by another key, or
// claiming the server's key without its box opening, changes nothing.
func TestEpochSpoofed(t *testing.T) {
	fs := newFake(t, nil)
	c := fs.client
	fs.deliver(&wire.Registered{TTL: 60, Refresh: 20, Epoch: 1})
	other, _ := crypto.GenerateIdentity(nil)
	k, _ := other.SharedKey(c.me)
	now := time.Now().UnixMilli()
	for _, body := range []wire.Body{
		&wire.Punch{TxID: 9, Epoch: 7},
		&wire.Error{Code: wire.ErrCodeInternal, Epoch: 7},
		&wire.ConnectReply{TxID: 9, Epoch: 7},
	} {
		c.HandleFrame(wire.SealFrame(nil, other.ID(), k, wire.Message{Time: now, Body: body}), serverAddr)
		c.HandleFrame(wire.SealFrame(nil, fs.id.ID(), k, wire.Message{Time: now, Body: body}), serverAddr)
	}
	if kicked(c) || c.Status().Epoch != 1 {
		t.Fatalf("a spoofed epoch change started a registration (epoch %x)", c.Status().Epoch)
	}
}
