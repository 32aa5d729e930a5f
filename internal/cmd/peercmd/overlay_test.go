package peercmd

import (
	"net/netip"
	"testing"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/overlay"
)

// Without --allow-any, only peers on the allow list may open flows to the
// overlay address: a peer this one merely dialled may not.
func TestAllowListPolicy(t *testing.T) {
	allowed, _ := crypto.GenerateIdentity(nil)
	other, _ := crypto.GenerateIdentity(nil)
	p := allowListPolicy([]string{allowed.ID().String()})
	me := netip.AddrPortFrom(netip.MustParseAddr("fd4b::1"), 80)
	if !p(netip.AddrPortFrom(allowed.ID().OverlayAddr(), 5000), me, overlay.ProtoTCP) {
		t.Error("the allowed peer was refused")
	}
	if p(netip.AddrPortFrom(other.ID().OverlayAddr(), 5000), me, overlay.ProtoTCP) {
		t.Error("a peer not on the allow list was admitted")
	}
}
