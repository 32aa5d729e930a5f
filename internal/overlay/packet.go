package overlay

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers the router looks into.
const (
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// ipv6HeaderLen is the fixed IPv6 header; the overlay carries IPv6 only.
const ipv6HeaderLen = 40

// MinMTU is the IPv6 minimum link MTU (RFC 8200), the MTU the router gives
// its device: every session's datagrams carry it.
const MinMTU = 1280

// Header is what the router reads of a packet: addresses, the upper-layer
// protocol (the IPv6 Next Header field: a packet with extension headers
// shows the first extension's number, and no ports) and, for TCP and UDP,
// the ports.
type Header struct {
	Src, Dst netip.Addr
	Proto    uint8
	SrcPort  uint16
	DstPort  uint16
}

// SrcAddrPort returns the source address and port.
func (h Header) SrcAddrPort() netip.AddrPort { return netip.AddrPortFrom(h.Src, h.SrcPort) }

// DstAddrPort returns the destination address and port.
func (h Header) DstAddrPort() netip.AddrPort { return netip.AddrPortFrom(h.Dst, h.DstPort) }

// Parse reads the header of an IPv6 packet. It fails (ok false) on anything
// that is not IPv6, is shorter than its header, or whose payload length
// disagrees with its size; a TCP or UDP packet too short for its ports
// fails too.
func Parse(pkt []byte) (h Header, ok bool) {
	if len(pkt) < ipv6HeaderLen || pkt[0]>>4 != 6 {
		return h, false
	}
	if int(binary.BigEndian.Uint16(pkt[4:6]))+ipv6HeaderLen != len(pkt) {
		return h, false
	}
	h.Proto = pkt[6]
	h.Src = netip.AddrFrom16([16]byte(pkt[8:24]))
	h.Dst = netip.AddrFrom16([16]byte(pkt[24:40]))
	if h.Proto == ProtoTCP || h.Proto == ProtoUDP {
		if len(pkt) < ipv6HeaderLen+4 {
			return h, false
		}
		h.SrcPort = binary.BigEndian.Uint16(pkt[40:42])
		h.DstPort = binary.BigEndian.Uint16(pkt[42:44])
	}
	return h, true
}

// PacketTooBig builds the ICMPv6 Packet Too Big message (RFC 4443 3.2)
// telling the sender of pkt that the path carries at most mtu bytes. It
// comes from pkt's destination, as if the far end had said it, and quotes
// as much of pkt as fits in MinMTU.
func PacketTooBig(pkt []byte, mtu int) []byte {
	h, ok := Parse(pkt)
	if !ok {
		return nil
	}
	quote := pkt[:min(len(pkt), MinMTU-ipv6HeaderLen-8)]
	out := make([]byte, ipv6HeaderLen+8+len(quote))
	out[0] = 6 << 4
	binary.BigEndian.PutUint16(out[4:6], uint16(8+len(quote)))
	out[6] = ProtoICMPv6
	out[7] = 64
	src, dst := h.Dst.As16(), h.Src.As16()
	copy(out[8:24], src[:])
	copy(out[24:40], dst[:])
	icmp := out[ipv6HeaderLen:]
	icmp[0] = 2 // Packet Too Big
	binary.BigEndian.PutUint32(icmp[4:8], uint32(mtu))
	copy(icmp[8:], quote)
	binary.BigEndian.PutUint16(icmp[2:4], icmpv6Checksum(out))
	return out
}

// icmpv6Checksum is the Internet checksum of an ICMPv6 message with the
// IPv6 pseudo-header of the packet pkt that carries it.
func icmpv6Checksum(pkt []byte) uint16 {
	body := pkt[ipv6HeaderLen:]
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	add(pkt[8:40])
	sum += uint32(len(body)) + ProtoICMPv6
	add(body)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
