// Package crypto holds keymesh's identities and the cryptographic
// constructions built on them: Ed25519 identities and their key files, the
// printable peer ID, the overlay IPv6 address derived from a key, NaCl boxes
// between identities, stateless address-validation cookies, sealed relay
// tickets, and TLS 1.3 certificates bound to an identity.
//
// Everything here is built from reviewed primitives (crypto/ed25519,
// golang.org/x/crypto/nacl/box, XChaCha20-Poly1305, HMAC-SHA-256); nothing
// is home-made.
package crypto
