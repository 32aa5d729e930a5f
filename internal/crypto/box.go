package crypto

import (
	"crypto/rand"

	"golang.org/x/crypto/nacl/box"
)

// BoxOverhead is what SealBox adds to a message.
const BoxOverhead = box.Overhead

// NonceSize is the size of a box nonce.
const NonceSize = 24

// NewNonce returns a random box nonce.
func NewNonce() [NonceSize]byte {
	var n [NonceSize]byte
	if _, err := rand.Read(n[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return n
}

// SealBox appends to out the box of msg under a precomputed shared key.
func SealBox(out, msg []byte, nonce *[NonceSize]byte, shared *[32]byte) []byte {
	return box.SealAfterPrecomputation(out, msg, nonce, shared)
}

// OpenBox appends to out the opened box, or returns ErrOpen.
func OpenBox(out, sealed []byte, nonce *[NonceSize]byte, shared *[32]byte) ([]byte, error) {
	m, ok := box.OpenAfterPrecomputation(out, sealed, nonce, shared)
	if !ok {
		return nil, ErrOpen
	}
	return m, nil
}
