package wire

import (
	"bytes"
	"testing"

	"github.com/keymesh/keymesh/internal/crypto"
)

func TestDataAndRelayFrames(t *testing.T) {
	payload := []byte("quic packet")
	d := AppendData(nil, 0xabcdef, payload)
	tag, p, err := ParseData(d)
	if err != nil || tag != 0xabcdef || !bytes.Equal(p, payload) {
		t.Fatalf("data: %x %q %v", tag, p, err)
	}
	ticket := bytes.Repeat([]byte{1}, crypto.TicketSize)
	rs := AppendRelaySend(nil, ticket, 0x55, payload)
	tk, rest, err := ParseRelaySend(rs)
	if err != nil || !bytes.Equal(tk, ticket) || len(rest) != TagLen+len(payload) {
		t.Fatalf("relay-send: %v", err)
	}
	n := len(rs)
	out := RelayedFromSend(rs)
	if len(out) >= n {
		t.Fatal("relayed frame not smaller than the send")
	}
	tag, p, err = ParseData(out)
	if err != nil || tag != 0x55 || !bytes.Equal(p, payload) || out[0] != TypeRelayed {
		t.Fatalf("relayed: %x %q %v", tag, p, err)
	}
}
