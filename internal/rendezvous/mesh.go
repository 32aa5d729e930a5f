package rendezvous

import (
	"log/slog"
	"net/netip"

	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/mesh"

	"github.com/keymesh/keymesh/internal/wire"
)

// Forwarder hands a datagram to another instance over the mesh, which sends
// it to dst from its own socket, and tells whether that instance was heard
// from lately. *mesh.Node is one.
type Forwarder interface {
	Forward(to netip.AddrPort, kind mesh.Kind, dst netip.AddrPort, payload []byte) error
	Alive(to netip.AddrPort) bool
}

// viaHome sends a sealed Punch for target through target's home instance
// when that is another instance, and reports whether it did. Behind a
// managed front door only the home's socket reaches the peer's NAT from the
// address it accepts. Should the mesh send fail, the caller sends the
// Punch itself (right with plain BGP anycast, best effort otherwise), as
// it does when the home was not heard from lately (its region down: the
// front door has moved the peer's flow elsewhere).
func (s *Server) viaHome(target *discovery.Record, punch []byte) bool {
	home := target.Home
	if s.cfg.Mesh == nil || !home.IsValid() || home == s.cfg.MeshAddr || !s.cfg.Mesh.Alive(home) {
		return false
	}
	if err := s.cfg.Mesh.Forward(home, mesh.KindPunch, target.Reflexive, punch); err != nil {
		s.log.Debug("punch through the home instance failed; sending it from here",
			"peer", target.ID.Short(), "home", home, "err", err)
		return false
	}
	return true
}

// DeliverPunches is the mesh handler of a rendezvous instance: it sends the
// Punches other instances forward for the peers whose flows this instance
// holds, from conn, the rendezvous socket those peers talk to. Anything
// but a sealed rendezvous frame is dropped.
func DeliverPunches(conn udpConn, log *slog.Logger) mesh.Handler {
	return func(kind mesh.Kind, dst netip.AddrPort, payload []byte) {
		if kind != mesh.KindPunch || len(payload) == 0 || !wire.IsFrameType(payload[0]) {
			log.Debug("mesh: dropped a forward that is not a rendezvous frame", "kind", kind)
			return
		}
		if _, err := conn.WriteToUDPAddrPort(payload, dst); err != nil {
			log.Debug("mesh: punch send failed", "to", dst, "err", err)
		}
	}
}
