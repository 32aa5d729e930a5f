package wire

import (
	"encoding/binary"
	"fmt"

	"github.com/keymesh/keymesh/internal/crypto"
)

// Sealed frame layout sizes.
const (
	sealedKeyOff   = HeaderLen
	sealedNonceOff = sealedKeyOff + 32
	sealedBoxOff   = sealedNonceOff + crypto.NonceSize
	// SealedOverhead is what a sealed frame adds to a message plaintext.
	SealedOverhead = sealedBoxOff + crypto.BoxOverhead
)

// SealFrame appends a sealed frame carrying m from sender, boxed under the
// key shared with the recipient.
func SealFrame(out []byte, sender crypto.PeerID, shared *[32]byte, m Message) []byte {
	return SealPlain(out, sender, shared, AppendMessage(make([]byte, 0, 256), m))
}

// SealPlain is SealFrame for a message already encoded with AppendMessage,
// for callers that keep their own plaintext buffer (a server's hot path).
func SealPlain(out []byte, sender crypto.PeerID, shared *[32]byte, plain []byte) []byte {
	nonce := crypto.NewNonce()
	out = append(out, TypeSealed, Version)
	out = append(out, sender[:]...)
	out = append(out, nonce[:]...)
	return crypto.SealBox(out, plain, &nonce, shared)
}

// Sealed is a parsed, still closed, sealed frame.
type Sealed struct {
	Sender crypto.PeerID
	Nonce  [crypto.NonceSize]byte
	Box    []byte
}

// ParseSealed splits a sealed frame. The caller looks up the key it shares
// with Sender and calls Open.
func ParseSealed(b []byte) (Sealed, error) {
	var s Sealed
	t, err := Header(b)
	if err != nil {
		return s, err
	}
	if t != TypeSealed {
		return s, fmt.Errorf("%w: frame type %#x is not sealed", ErrMalformed, t)
	}
	if len(b) < SealedOverhead {
		return s, ErrShort
	}
	copy(s.Sender[:], b[sealedKeyOff:sealedNonceOff])
	copy(s.Nonce[:], b[sealedNonceOff:sealedBoxOff])
	s.Box = b[sealedBoxOff:]
	return s, nil
}

// Open authenticates and decodes the frame's message.
func (s *Sealed) Open(shared *[32]byte) (Message, error) {
	var buf [MaxFrame]byte
	plain, err := crypto.OpenBox(buf[:0], s.Box, &s.Nonce, shared)
	if err != nil {
		return Message{}, err
	}
	return ParseMessage(plain)
}

// TagLen is the size of a data frame's sender tag.
const TagLen = 8

// DataOverhead is what a direct data frame adds to its payload.
const DataOverhead = HeaderLen + TagLen

// AppendData appends a direct data frame.
func AppendData(out []byte, tag uint64, payload []byte) []byte {
	out = append(out, TypeData, Version)
	out = binary.BigEndian.AppendUint64(out, tag)
	return append(out, payload...)
}

// ParseData splits a direct data frame, or a Relayed frame (same layout).
func ParseData(b []byte) (tag uint64, payload []byte, err error) {
	t, err := Header(b)
	if err != nil {
		return 0, nil, err
	}
	if t != TypeData && t != TypeRelayed {
		return 0, nil, fmt.Errorf("%w: frame type %#x is not data", ErrMalformed, t)
	}
	if len(b) < DataOverhead {
		return 0, nil, ErrShort
	}
	return binary.BigEndian.Uint64(b[HeaderLen:]), b[DataOverhead:], nil
}

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
