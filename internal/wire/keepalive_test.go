package wire

import (
	"strings"
	"testing"

	"github.com/keymesh/keymesh/internal/crypto"
)

// TestKeepaliveAckNeverLarger checks the amplification bound: the largest
// KeepaliveAck (longest instance name, an epoch) is no larger than the
// smallest Keepalive.
func TestKeepaliveAckNeverLarger(t *testing.T) {
	req := AppendMessage(nil, Message{Time: 1, Body: &Keepalive{Cookie: crypto.Cookie{1}}})
	ack := AppendMessage(nil, Message{Time: 1, Body: &KeepaliveAck{Instance: strings.Repeat("x", 300), Epoch: 1 << 62}})
	if len(ack) > len(req) {
		t.Fatalf("ack plaintext %d bytes > keepalive %d", len(ack), len(req))
	}
	m, err := ParseMessage(ack)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Body.(*KeepaliveAck).Instance; got != strings.Repeat("x", MaxAckInstance) {
		t.Fatalf("instance %q not cut to %d bytes", got, MaxAckInstance)
	}
}
