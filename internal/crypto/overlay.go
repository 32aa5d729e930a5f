package crypto

import (
	"crypto/sha256"
	"net/netip"
)

// OverlayPrefix is the fixed unique-local /16 under which every overlay
// address lives. The remaining 112 bits are the first 14 bytes of
// SHA-256(public key).
var OverlayPrefix = netip.MustParsePrefix("fd4b::/16")

// OverlayAddr returns the peer's overlay IPv6 address. Anyone can recompute
// it from the key; nobody hands it out, so it never changes.
func (id PeerID) OverlayAddr() netip.Addr {
	sum := sha256.Sum256(id[:])
	var a [16]byte
	a[0], a[1] = 0xfd, 0x4b
	copy(a[2:], sum[:14])
	return netip.AddrFrom16(a)
}

// Owns reports whether addr is the overlay address derived from id.
func (id PeerID) Owns(addr netip.Addr) bool {
	return addr.Unmap() == id.OverlayAddr()
}

// IsOverlay reports whether addr lies in the overlay prefix.
func IsOverlay(addr netip.Addr) bool { return OverlayPrefix.Contains(addr) }
