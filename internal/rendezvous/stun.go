package rendezvous

import (
	"net/netip"

	"github.com/pion/stun/v4"
)

// handleSTUN answers a STUN Binding request with the source address in an
// XOR-MAPPED-ADDRESS and nothing else. The answer is 32 bytes for IPv4 and
// 44 for IPv6 (20-byte header + one attribute); the smallest valid request
// is a bare 20-byte header, so the worst amplification is 1.6x (IPv4) or
// 2.2x (IPv6), which is why every answer takes a token from its source's
// STUN budget (Config.STUNRate, shared with the RFC 5780 sockets). Typical
// clients add FINGERPRINT or SOFTWARE and get at most their own size back.
// Other STUN methods (TURN is the relay's) are dropped.
func (s *Server) handleSTUN(sc *scratch, from netip.AddrPort, pkt []byte) []outPacket {
	if len(pkt) < stun.TransactionIDSize+8 {
		return s.reject(reasonTruncated)
	}
	req := &sc.stunReq
	if err := stun.Decode(pkt, req); err != nil {
		return s.reject(reasonMalformed)
	}
	if req.Type != stun.BindingRequest {
		return s.reject(reasonUnknownType)
	}
	if !s.AllowSTUN(from.Addr()) {
		return nil
	}
	if nc := s.cfg.Netcheck; nc != nil {
		resp, src, err := nc.Answer(pkt, from, s.cfg.NetcheckLocal)
		if err != nil {
			return s.reject(reasonMalformed)
		}
		s.m.stun.Inc()
		if src != s.cfg.NetcheckLocal {
			nc.SendAnswer(resp, src, from) // from the other address or port asked for
			return nil
		}
		sc.replies = append(sc.replies, outPacket{to: from, b: resp})
		return sc.replies
	}
	out := &sc.stunOut
	out.Reset()
	out.Type = stun.BindingSuccess
	out.TransactionID = req.TransactionID
	out.WriteHeader()
	a := from.Addr()
	var ip []byte
	if a.Is4() {
		b := a.As4()
		ip = append(sc.ip[:0], b[:]...)
	} else {
		b := a.As16()
		ip = append(sc.ip[:0], b[:]...)
	}
	if err := (stun.XORMappedAddress{IP: ip, Port: int(from.Port())}).AddTo(out); err != nil {
		return s.reject(reasonMalformed)
	}
	s.m.stun.Inc()
	sc.replies = append(sc.replies, outPacket{to: from, b: out.Raw})
	return sc.replies
}
