package wire

import (
	"bytes"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
)

// FuzzParseMessage checks that the message decoder never panics and that
// whatever it accepts re-encodes to the same bytes.
func FuzzParseMessage(f *testing.F) {
	for _, b := range sampleBodies(f) {
		f.Add(AppendMessage(nil, Message{Time: 1, Body: b}))
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMessage(b)
		if err != nil {
			return
		}
		again := AppendMessage(nil, m)
		m2, err := ParseMessage(again)
		if err != nil {
			t.Fatalf("re-encoded message does not parse: %v", err)
		}
		if !bytes.Equal(AppendMessage(nil, m2), again) {
			t.Fatal("encoding not stable")
		}
	})
}

// FuzzFrames runs every frame decoder over arbitrary bytes.
func FuzzFrames(f *testing.F) {
	id, _ := crypto.GenerateIdentity(nil)
	shared, _ := id.SharedKey(id.ID())
	f.Add(SealFrame(nil, id.ID(), shared, Message{Time: 1, Body: &Probe{TxID: 1}}))
	f.Add(AppendData(nil, 1, []byte("x")))
	f.Add(AppendRelaySend(nil, make([]byte, crypto.TicketSize), 2, []byte("y")))
	f.Add(AppendRelayBind(nil, id, time.Unix(0, 0), crypto.Cookie{}))
	f.Add(AppendRelayChallenge(nil, RelayChallenge{Cookie: crypto.Cookie{1}, Echo: Echo{2}}))
	f.Add(AppendRelayBound(nil, RelayBound{Ticket: make([]byte, crypto.TicketSize), Expiry: time.Unix(0, 0)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		Classify(b)
		if s, err := ParseSealed(b); err == nil {
			_, _ = s.Open(shared)
		}
		_, _, _ = ParseData(b)
		if _, rest, err := ParseRelaySend(b); err == nil {
			n := len(b)
			out := RelayedFromSend(bytes.Clone(b))
			if len(out) > n || len(rest) != len(out)-HeaderLen {
				t.Fatalf("relayed frame of %d bytes from a send of %d", len(out), n)
			}
		}
		_, _ = PeekRelayBind(b)
		_, _ = ParseRelayBind(b)
		_, _ = ParseRelayChallenge(b)
		_, _ = ParseRelayBound(b)
	})
}
