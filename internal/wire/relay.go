package wire

import (
	"encoding/binary"
	"fmt"

	"github.com/keymesh/keymesh/internal/crypto"
)

// RelaySendOverhead is what a RelaySend frame adds to its payload.
const RelaySendOverhead = HeaderLen + crypto.TicketSize + TagLen

// AppendRelaySend appends a frame asking a relay to forward payload to the
// holder of ticket.
func AppendRelaySend(out []byte, ticket []byte, tag uint64, payload []byte) []byte {
	out = append(out, TypeRelaySend, Version)
	out = append(out, ticket[:crypto.TicketSize]...)
	out = binary.BigEndian.AppendUint64(out, tag)
	return append(out, payload...)
}

// ParseRelaySend splits a RelaySend frame into the recipient's sealed ticket
// and the part the relay forwards (tag and payload).
func ParseRelaySend(b []byte) (ticket, rest []byte, err error) {
	t, err := Header(b)
	if err != nil {
		return nil, nil, err
	}
	if t != TypeRelaySend {
		return nil, nil, fmt.Errorf("%w: frame type %#x is not relay-send", ErrMalformed, t)
	}
	if len(b) < RelaySendOverhead {
		return nil, nil, ErrShort
	}
	return b[HeaderLen : HeaderLen+crypto.TicketSize], b[HeaderLen+crypto.TicketSize:], nil
}

// RelayedFromSend rewrites a RelaySend frame in place into the Relayed frame
// the relay forwards, returning it (a suffix of b: never larger).
func RelayedFromSend(b []byte) []byte {
	out := b[crypto.TicketSize:]
	out[0], out[1] = TypeRelayed, Version
	return out
}
