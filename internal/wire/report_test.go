package wire

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/keymesh/keymesh/internal/crypto"
)

func TestReportRoundTrip(t *testing.T) {
	r := &Report{Cookie: crypto.Cookie{1, 2, 3}, Initiator: true, LocalNAT: NATNone, RemoteNAT: NATUDPBlocked,
		Outcome: OutcomeRelayStream, FirstByteMs: 1 << 31, DirectMs: 0, Switches: 65535}
	m := Message{Time: 42, Body: r}
	got, err := ParseMessage(AppendMessage(nil, m))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip: got %+v, want %+v", got.Body, r)
	}
}

// TestReportRefusesOutOfRange: a report whose NAT behaviours or outcome are
// outside the fixed sets does not decode, so a sender cannot grow the
// server's label sets.
func TestReportRefusesOutOfRange(t *testing.T) {
	for name, r := range map[string]Report{
		"local NAT":  {LocalNAT: maxNAT + 1},
		"remote NAT": {RemoteNAT: 255},
		"outcome":    {Outcome: maxOutcome + 1},
	} {
		b := AppendMessage(nil, Message{Time: 1, Body: &r})
		if _, err := ParseMessage(b); err == nil {
			t.Errorf("%s out of range: decoded", name)
		}
	}
	// The initiator flag is a bool: 2 is not one.
	b := AppendMessage(nil, Message{Time: 1, Body: &Report{}})
	b[msgHeader+crypto.CookieSize] = 2
	if _, err := ParseMessage(b); err == nil {
		t.Error("initiator byte 2: decoded")
	}
}

// msgHeader is a message plaintext's type and clock.
const msgHeader = 1 + 8

// FuzzParseReport feeds Report bodies to the decoder: whatever it accepts
// has values within the fixed sets and re-encodes to the same bytes.
func FuzzParseReport(f *testing.F) {
	f.Add(AppendMessage(nil, Message{Time: 1, Body: &Report{Outcome: OutcomeDirect, LocalNAT: NATEndpointIndep, RemoteNAT: NATAddrPortDepend, FirstByteMs: 10, DirectMs: 20, Switches: 2}}))
	f.Add(AppendMessage(nil, Message{Time: 1, Body: &Report{Initiator: true, Outcome: OutcomeRelayUDP}}))
	f.Add([]byte{byte(MsgReport)})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 0 {
			b[0] = byte(MsgReport)
		}
		m, err := ParseMessage(b)
		if err != nil {
			return
		}
		r := m.Body.(*Report)
		if r.LocalNAT > maxNAT || r.RemoteNAT > maxNAT || r.Outcome > maxOutcome {
			t.Fatalf("accepted out-of-range report %+v", r)
		}
		if again := AppendMessage(nil, m); !bytes.Equal(again, b) {
			t.Fatalf("re-encoded %x, read %x", again, b)
		}
	})
}
