package crypto

import (
	"crypto/ed25519"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"strings"
)

// PeerIDLen is the length of a peer ID's text form: 32 bytes in base32
// without padding.
const PeerIDLen = 52

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// PeerID is a peer's Ed25519 public key. Its text form (String) is the key
// in lowercase base32 without padding: 52 characters, safe to copy and paste.
type PeerID [32]byte

// String returns the peer ID's text form.
func (id PeerID) String() string { return idEncoding.EncodeToString(id[:]) }

// Short returns the first eight characters of the text form, for logs.
func (id PeerID) Short() string { return id.String()[:8] }

// Tag returns the first eight bytes of the key as an integer: the compact
// sender tag of data frames. It identifies, it does not authenticate.
func (id PeerID) Tag() uint64 { return binary.BigEndian.Uint64(id[:8]) }

// PublicKey returns the ID as an Ed25519 public key.
func (id PeerID) PublicKey() ed25519.PublicKey { return ed25519.PublicKey(id[:]) }

// IsZero reports whether id is the zero value.
func (id PeerID) IsZero() bool { return id == PeerID{} }

// MarshalText implements encoding.TextMarshaler.
func (id PeerID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *PeerID) UnmarshalText(b []byte) error {
	p, err := ParsePeerID(string(b))
	if err != nil {
		return err
	}
	*id = p
	return nil
}

// ParsePeerID parses the text form of a peer ID. Surrounding space is
// ignored; upper case is accepted.
func ParsePeerID(s string) (PeerID, error) {
	var id PeerID
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) != PeerIDLen {
		return id, fmt.Errorf("%q: %w (got %d characters)", abbrev(s), ErrBadPeerID, len(s))
	}
	n, err := idEncoding.Decode(id[:], []byte(s))
	if err != nil || n != len(id) {
		return PeerID{}, fmt.Errorf("%q: %w", abbrev(s), ErrBadPeerID)
	}
	// Reject non-canonical encodings (trailing bits set).
	if id.String() != s {
		return PeerID{}, fmt.Errorf("%q: %w (non-canonical)", abbrev(s), ErrBadPeerID)
	}
	return id, nil
}

// PeerIDFromKey converts an Ed25519 public key into a PeerID.
func PeerIDFromKey(pub ed25519.PublicKey) (PeerID, error) {
	var id PeerID
	if len(pub) != ed25519.PublicKeySize {
		return id, fmt.Errorf("public key of %d bytes: %w", len(pub), ErrBadPeerID)
	}
	copy(id[:], pub)
	return id, nil
}

func abbrev(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
