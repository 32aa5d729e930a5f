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
// from lately (Alive) or has missed heartbeats (Suspect). *mesh.Node is one.
type Forwarder interface {
	Forward(to netip.AddrPort, kind mesh.Kind, dst netip.AddrPort, payload []byte) error
	Alive(to netip.AddrPort) bool
	Suspect(to netip.AddrPort) bool
}

// viaHome sends a sealed Punch for target through target's home instance
// when that is another instance, and reports whether that copy is the only
// one needed. Behind a managed front door only the home's socket reaches
// the peer's NAT from the address it accepts. Otherwise the caller sends
// the Punch itself, to target's registered address (right with plain BGP
// anycast, best effort otherwise): when the mesh send fails, and when the
// home was not heard from lately (its region down: the front door has
// moved the peer's flow elsewhere).
//
// A home that missed heartbeats (mesh.SuspectAfter) may be dead well
// before the mesh gives it up (mesh.DeadAfter), and a Punch handed to a
// dead home is lost. So a Punch for a suspect home goes both ways: through
// the home, and (false) from here. Two copies at most, both to the
// registered peer's own address; behind a front door that has not moved
// the peer's flow, the copy from here is dropped by the peer's NAT; a
// peer that gets both drops the second, the same sealed frame, as a replay.
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
	return !s.cfg.Mesh.Suspect(home)
}

// elsewhere reports whether target's home is another instance of the mesh.
func (s *Server) elsewhere(target *discovery.Record) bool {
	return s.cfg.Mesh != nil && target.Home.IsValid() && target.Home != s.cfg.MeshAddr
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
