package policy

import (
	"net/netip"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
)

// IP protocol numbers of the overlay's packets.
const (
	ipProtoTCP    = 6
	ipProtoUDP    = 17
	ipProtoICMPv6 = 58
)

// Refused overlay flows are remembered for FlowMemory, at most MaxFlows of
// them (the table is emptied when full), so that a flow whose packets keep
// coming is logged and counted once, not once per packet.
const (
	FlowMemory = time.Minute
	MaxFlows   = 4096
)

type flowKey struct {
	src, dst netip.AddrPort
	proto    uint8
}

// AllowPacket judges an inbound packet of the overlay data path (TUN or
// userspace netstack) that is not a reply to a flow this peer opened: src
// is the sending peer's overlay address (checked against its key) and
// port, dst this peer's, proto the IP protocol. TCP and UDP follow the
// rules; ICMPv6 passes for every peer some rule admits; anything else (an
// extension header the caller did not walk, SCTP, DCCP) only for a peer a
// rule admits to every port. A
// refused flow is logged and counted once per FlowMemory. Its signature is
// that of overlay.Policy.
func (p *Policy) AllowPacket(src, dst netip.AddrPort, proto uint8) bool {
	if p.any {
		return true
	}
	peer, known := p.byAddr[src.Addr()]
	var pr Proto
	switch proto {
	case ipProtoTCP:
		pr = TCP
	case ipProtoUDP:
		pr = UDP
	case ipProtoICMPv6:
		if known || len(p.wildcard) > 0 {
			return true
		}
	default:
		// An extension header or another protocol with ports: only a
		// rule for every port admits it.
		if p.everyPort(peer, known) {
			return true
		}
	}
	if pr != Any && p.check(peer, known, pr, dst.Port()) {
		return true
	}
	k := flowKey{src, dst, proto}
	now := p.now()
	p.mu.Lock()
	if t, ok := p.refusedFlows[k]; ok && now.Sub(t) < FlowMemory {
		p.mu.Unlock()
		return false
	}
	if len(p.refusedFlows) >= MaxFlows {
		clear(p.refusedFlows)
	}
	p.refusedFlows[k] = now
	p.mu.Unlock()
	kind, who, hint := KindTCP, src.Addr().String(), "no --allow rule admits this overlay address"
	if pr == UDP {
		kind = KindUDP
	}
	if pr == Any {
		kind = KindSession
	}
	if known {
		who = peer.String()
		hint = "allow it with --allow " + peer.String() + ":" + PortRange{Lo: dst.Port(), Hi: dst.Port(), Proto: pr}.String()
	}
	p.refuse(kind, who, dst.Port(), hint)
	return false
}

// everyPort reports whether a rule lets the peer (known: the rules name
// it) reach every port of every protocol.
func (p *Policy) everyPort(peer crypto.PeerID, known bool) bool {
	if known {
		for _, i := range p.byPeer[peer] {
			if len(p.rules[i].Ports) == 0 {
				return true
			}
		}
	}
	for _, i := range p.wildcard {
		if len(p.rules[i].Ports) == 0 {
			return true
		}
	}
	return false
}

// check is Check for a peer that known says whether the rules name.
func (p *Policy) check(peer crypto.PeerID, known bool, proto Proto, port uint16) bool {
	if known {
		for _, i := range p.byPeer[peer] {
			if p.rules[i].allows(proto, port) {
				return true
			}
		}
	}
	for _, i := range p.wildcard {
		if p.rules[i].allows(proto, port) {
			return true
		}
	}
	return false
}
