package wire

import (
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
	return appendSealed(out, TypeSealed, &sender, &nonce, shared, plain)
}

// appendSealed appends a frame of type t in a sealed frame's layout: the
// header, sender, nonce, and plain boxed under shared.
func appendSealed(out []byte, t byte, sender *crypto.PeerID, nonce *[crypto.NonceSize]byte, shared *[32]byte, plain []byte) []byte {
	out = append(out, t, VersionOf(t))
	out = append(out, sender[:]...)
	out = append(out, nonce[:]...)
	return crypto.SealBox(out, plain, nonce, shared)
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
	return parseSealed(b, TypeSealed, "sealed")
}

// parseSealed splits a frame of type want in a sealed frame's layout (what
// names the type in the error).
func parseSealed(b []byte, want byte, what string) (Sealed, error) {
	var s Sealed
	t, err := Header(b)
	if err != nil {
		return s, err
	}
	if t != want {
		return s, fmt.Errorf("%w: frame type %#x is not %s", ErrMalformed, t, what)
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
