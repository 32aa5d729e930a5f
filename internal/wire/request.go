package wire

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"

	"github.com/keymesh/keymesh/internal/crypto"
)

// Request frame layout: a Sealed frame whose nonce's first ProofLen bytes
// are the cookie proof and whose last SaltLen bytes are random.
const (
	// ProofLen is the size of a Request's cookie proof.
	ProofLen = 16
	// SaltLen is the size of the random part of a Request's nonce.
	SaltLen = crypto.NonceSize - ProofLen
	// CookieReplyLen is the size of a CookieReply frame.
	CookieReplyLen = HeaderLen + crypto.CookieSize + SaltLen
)

// Proof is a Request's cookie proof: a MAC keyed by the rendezvous cookie
// over the sender's key and the nonce's salt.
type Proof [ProofLen]byte

// proofLabel separates the proof's hash from any other use of SHA-256.
var proofLabel = [16]byte{'k', 'e', 'y', 'm', 'e', 's', 'h', ' ', 'r', 'z', ' ', 'p', 'r', 'o', 'o', 'f'}

// RequestProof is the proof a Request from sender with salt carries for
// cookie: SHA-256(cookie, label, sender, salt) cut to ProofLen bytes. The
// input has a fixed length, so keying the hash by prefix is a sound MAC.
func RequestProof(cookie *crypto.Cookie, sender *crypto.PeerID, salt *[SaltLen]byte) Proof {
	var in [crypto.CookieSize + len(proofLabel) + 32 + SaltLen]byte
	n := copy(in[:], cookie[:])
	n += copy(in[n:], proofLabel[:])
	n += copy(in[n:], sender[:])
	copy(in[n:], salt[:])
	sum := sha256.Sum256(in[:])
	var p Proof
	copy(p[:], sum[:])
	return p
}

// SealRequest appends a Request frame (a peer's message to a rendezvous)
// carrying plain, an encoded Message. With a cookie the nonce starts with
// its proof; without one (nil or all zero) with random bytes. It returns the
// frame and its salt, which a CookieReply echoes.
func SealRequest(out []byte, sender crypto.PeerID, shared *[32]byte, plain []byte, cookie *crypto.Cookie) ([]byte, [SaltLen]byte) {
	var nonce [crypto.NonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	var salt [SaltLen]byte
	copy(salt[:], nonce[ProofLen:])
	if cookie != nil && *cookie != (crypto.Cookie{}) {
		p := RequestProof(cookie, &sender, &salt)
		copy(nonce[:ProofLen], p[:])
	}
	return appendSealed(out, TypeRequest, &sender, &nonce, shared, plain), salt
}

// ParseRequest splits a Request frame (its layout is a Sealed frame's).
func ParseRequest(b []byte) (Sealed, error) {
	return parseSealed(b, TypeRequest, "a request")
}

// Salt returns the random part of a Request's nonce.
func (s *Sealed) Salt() [SaltLen]byte {
	var salt [SaltLen]byte
	copy(salt[:], s.Nonce[ProofLen:])
	return salt
}

// ProofValid reports whether a Request's nonce starts with the proof for
// cookie (in constant time).
func (s *Sealed) ProofValid(cookie *crypto.Cookie) bool {
	salt := s.Salt()
	p := RequestProof(cookie, &s.Sender, &salt)
	return subtle.ConstantTimeCompare(p[:], s.Nonce[:ProofLen]) == 1
}

// AppendCookieReply appends the rendezvous' unsealed answer to a Request
// without a valid proof: the cookie for the request's source, and the
// request's salt XOR the cookie's first bytes, by which the peer knows the
// answer saw its request (an off-path forger cannot guess the salt) and no
// byte of which is the requester's choice.
func AppendCookieReply(out []byte, cookie crypto.Cookie, salt [SaltLen]byte) []byte {
	out = append(out, TypeCookieReply, VersionOf(TypeCookieReply))
	out = append(out, cookie[:]...)
	for i := range salt {
		out = append(out, salt[i]^cookie[i])
	}
	return out
}

// ParseCookieReply returns a CookieReply's cookie and the salt of the
// request it answers.
func ParseCookieReply(b []byte) (crypto.Cookie, [SaltLen]byte, error) {
	var (
		c    crypto.Cookie
		salt [SaltLen]byte
	)
	t, err := Header(b)
	if err != nil {
		return c, salt, err
	}
	if t != TypeCookieReply {
		return c, salt, fmt.Errorf("%w: frame type %#x is not a cookie reply", ErrMalformed, t)
	}
	if len(b) != CookieReplyLen {
		return c, salt, fmt.Errorf("%w: cookie reply of %d bytes, want %d", ErrMalformed, len(b), CookieReplyLen)
	}
	copy(c[:], b[HeaderLen:])
	for i := range salt {
		salt[i] = b[HeaderLen+crypto.CookieSize+i] ^ c[i]
	}
	return c, salt, nil
}
