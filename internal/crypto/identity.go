package crypto

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"fmt"
	"io"

	"filippo.io/edwards25519"
	//lint:ignore SA1019 HSalsa20 is the key derivation of NaCl box (box.Precompute uses it); no other package exposes it.
	"golang.org/x/crypto/salsa20/salsa"
)

// Identity is an Ed25519 key pair: a peer's or a server's identity. The
// X25519 key used for boxes is derived from it (as libsodium's
// crypto_sign_ed25519_sk_to_curve25519 does), so one key serves both.
type Identity struct {
	priv  ed25519.PrivateKey
	id    PeerID
	xpriv [32]byte
	xkey  *ecdh.PrivateKey // xpriv, ready for ECDH (made once: it costs a base multiplication)
}

// GenerateIdentity makes a new identity from r (crypto/rand when nil).
func GenerateIdentity(r io.Reader) (*Identity, error) {
	if r == nil {
		r = rand.Reader
	}
	_, priv, err := ed25519.GenerateKey(r)
	if err != nil {
		return nil, fmt.Errorf("generate identity: %w", err)
	}
	return IdentityFromSeed(priv.Seed())
}

// IdentityFromSeed rebuilds an identity from its 32-byte Ed25519 seed.
func IdentityFromSeed(seed []byte) (*Identity, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("seed of %d bytes, want %d: %w", len(seed), ed25519.SeedSize, ErrBadKeyFile)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	id := &Identity{priv: priv}
	copy(id.id[:], priv.Public().(ed25519.PublicKey))
	h := sha512.Sum512(seed)
	copy(id.xpriv[:], h[:32])
	id.xpriv[0] &= 248
	id.xpriv[31] &= 127
	id.xpriv[31] |= 64
	xkey, err := ecdh.X25519().NewPrivateKey(id.xpriv[:])
	if err != nil {
		return nil, fmt.Errorf("derive X25519 key: %w", err)
	}
	id.xkey = xkey
	return id, nil
}

// ID returns the identity's peer ID (its public key).
func (i *Identity) ID() PeerID { return i.id }

// PrivateKey returns the Ed25519 private key.
func (i *Identity) PrivateKey() ed25519.PrivateKey { return i.priv }

// Seed returns the 32-byte Ed25519 seed the identity is built from.
func (i *Identity) Seed() []byte { return i.priv.Seed() }

// Sign signs msg with the identity's key.
func (i *Identity) Sign(msg []byte) []byte { return ed25519.Sign(i.priv, msg) }

// Verify checks an Ed25519 signature by id over msg.
func Verify(id PeerID, msg, sig []byte) bool {
	return ed25519.Verify(id.PublicKey(), msg, sig)
}

// X25519Public converts a peer's Ed25519 public key to its X25519 form.
func X25519Public(id PeerID) ([32]byte, error) {
	var out [32]byte
	p, err := new(edwards25519.Point).SetBytes(id[:])
	if err != nil {
		return out, fmt.Errorf("peer key is not a valid Ed25519 point: %w", err)
	}
	copy(out[:], p.BytesMontgomery())
	return out, nil
}

// SharedKey computes the NaCl box key shared between this identity and peer.
// Compute it once per peer and keep it: it costs a scalar multiplication.
func (i *Identity) SharedKey(peer PeerID) (*[32]byte, error) {
	xpub, err := X25519Public(peer)
	if err != nil {
		return nil, err
	}
	// One X25519 (crypto/ecdh refuses low-order points: an all-zero
	// shared secret), then HSalsa20 as box.Precompute does: the same key
	// as box.Precompute at a third of its cost through x/crypto (a
	// rendezvous pays this for every peer it has not met).
	pub, err := ecdh.X25519().NewPublicKey(xpub[:])
	if err != nil {
		return nil, fmt.Errorf("peer key: %w", err)
	}
	s, err := i.xkey.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("peer key: %w", err)
	}
	var shared, in [32]byte
	copy(in[:], s)
	var zeros [16]byte
	salsa.HSalsa20(&shared, &zeros, &in, &salsa.Sigma)
	return &shared, nil
}
