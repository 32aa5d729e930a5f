package overlay_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/keymesh/keymesh/internal/overlay"
)

func TestParse(t *testing.T) {
	src, dst := netip.MustParseAddr("fd4b::1"), netip.MustParseAddr("fd4b::2")
	h, ok := overlay.Parse(udpPacket(src, dst, 1234, 53, []byte("x")))
	if !ok || h.Src != src || h.Dst != dst || h.Proto != overlay.ProtoUDP || h.SrcPort != 1234 || h.DstPort != 53 {
		t.Fatalf("Parse = %+v, %v", h, ok)
	}
	bad := udpPacket(src, dst, 1, 2, []byte("xy"))
	for name, p := range map[string][]byte{
		"short":     bad[:39],
		"ipv4":      append([]byte{0x45}, bad[1:]...),
		"truncated": bad[:len(bad)-1],
	} {
		if _, ok := overlay.Parse(p); ok {
			t.Errorf("Parse(%s) ok", name)
		}
	}
}

// The Packet Too Big message goes back to the sender, says the MTU, fits
// the minimum MTU and carries a valid checksum.
func TestPacketTooBig(t *testing.T) {
	src, dst := netip.MustParseAddr("fd4b::1"), netip.MustParseAddr("fd4b::2")
	big := udpPacket(src, dst, 1, 2, make([]byte, 3000))
	ptb := overlay.PacketTooBig(big, 1280)
	h, ok := overlay.Parse(ptb)
	if !ok || h.Src != dst || h.Dst != src || h.Proto != overlay.ProtoICMPv6 || len(ptb) > overlay.MinMTU {
		t.Fatalf("PacketTooBig: %+v ok=%v len=%d", h, ok, len(ptb))
	}
	if ptb[40] != 2 || binary.BigEndian.Uint32(ptb[44:48]) != 1280 {
		t.Fatalf("type %d mtu %d", ptb[40], binary.BigEndian.Uint32(ptb[44:48]))
	}
	// The checksum over pseudo-header and message, checksum included, is 0xffff.
	var sum uint32
	for i := 8; i < 40; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ptb[i:]))
	}
	sum += uint32(len(ptb)-40) + overlay.ProtoICMPv6
	for i := 40; i+1 < len(ptb); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ptb[i:]))
	}
	if (len(ptb)-40)%2 == 1 {
		sum += uint32(ptb[len(ptb)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		t.Fatalf("checksum does not verify: %#x", sum)
	}
}

func FuzzParse(f *testing.F) {
	src, dst := netip.MustParseAddr("fd4b::1"), netip.MustParseAddr("fd4b::2")
	f.Add(udpPacket(src, dst, 1, 2, []byte("hello")))
	f.Add(udpPacket(src, dst, 1, 2, nil)[:44])
	f.Add([]byte{0x60})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := overlay.Parse(b)
		if !ok {
			return
		}
		if ptb := overlay.PacketTooBig(b, 1280); len(ptb) > overlay.MinMTU {
			t.Fatalf("PacketTooBig of %d bytes is %d bytes", len(b), len(ptb))
		}
		_ = h
	})
}
