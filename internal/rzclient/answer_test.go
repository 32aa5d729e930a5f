package rzclient

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// TestAnswerOnlyAuthentic: OnAnswer counts sealed frames from the pinned
// server key that are fresh and new; a frame sealed by another key, one
// stamped outside the clock window and a replay (also one the other
// client of a shared cache took first) count nothing. OnAsk counts the
// requests the server answers, Ping's included.
func TestAnswerOnlyAuthentic(t *testing.T) {
	var asked, answered, probeAnswered atomic.Int64
	seen := NewReplayCache(0)
	fs := newFake(t, func(c *Config) {
		c.Seen = seen
		c.OnAsk = func() { asked.Add(1) }
		c.OnAnswer = func() { answered.Add(1) }
	})
	probe, err := New(Config{
		Identity: fs.client.cfg.Identity, Server: serverAddr, ServerKey: fs.id.ID(),
		Send: func([]byte, netip.AddrPort) error { return nil }, Seen: seen,
		OnAnswer: func() { probeAnswered.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}

	good := fs.frame(&wire.KeepaliveAck{Instance: "r1"})
	fs.client.HandleFrame(good, serverAddr)
	if answered.Load() != 1 {
		t.Fatalf("an authentic answer counted %d times, want 1", answered.Load())
	}
	fs.client.HandleFrame(good, serverAddr)
	probe.HandleFrame(good, serverAddr)
	if answered.Load() != 1 || probeAnswered.Load() != 0 {
		t.Fatalf("a replayed answer counted: main %d, probe %d", answered.Load(), probeAnswered.Load())
	}
	other, _ := crypto.GenerateIdentity(nil)
	k, _ := other.SharedKey(fs.client.me)
	fs.client.HandleFrame(wire.SealFrame(nil, other.ID(), k, wire.Message{Time: time.Now().UnixMilli(), Body: &wire.KeepaliveAck{}}), serverAddr)
	old := wire.SealFrame(nil, fs.id.ID(), fs.shared, wire.Message{Time: time.Now().Add(-time.Hour).UnixMilli(), Body: &wire.KeepaliveAck{}})
	fs.client.HandleFrame(old, serverAddr)
	if answered.Load() != 1 {
		t.Fatalf("a forged or stale answer counted: %d", answered.Load())
	}
	probe.HandleFrame(fs.frame(&wire.KeepaliveAck{Instance: "r1"}), serverAddr)
	if probeAnswered.Load() != 1 {
		t.Fatalf("the probe client counted %d fresh answers, want 1", probeAnswered.Load())
	}

	if err := fs.client.Ping(); err != nil {
		t.Fatal(err)
	}
	if m := fs.next(); m.Body.Type() != wire.MsgKeepalive {
		t.Fatalf("Ping sent %s, want a keepalive", m.Body.Type())
	}
	if asked.Load() != 1 {
		t.Fatalf("OnAsk called %d times for one keepalive, want 1", asked.Load())
	}
	if err := fs.client.Report(wire.Report{}); err != nil {
		t.Fatal(err)
	}
	fs.next()
	if asked.Load() != 1 {
		t.Fatal("a report, which the server does not answer, counted as a request")
	}
}
