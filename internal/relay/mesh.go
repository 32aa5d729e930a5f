package relay

import (
	"log/slog"
	"net/netip"

	"github.com/keymesh/keymesh/internal/mesh"
	"github.com/keymesh/keymesh/internal/wire"
)

// MeshSender sends a datagram to another instance over the mesh, which
// sends it to dst from its own socket, and tells whether that instance was
// heard from lately (Alive) or has missed heartbeats (Suspect). *mesh.Node
// is one.
type MeshSender interface {
	Send(buf []byte, to netip.AddrPort, kind mesh.Kind, dst netip.AddrPort, payload []byte) ([]byte, error)
	Alive(to netip.AddrPort) bool
	Suspect(to netip.AddrPort) bool
}

// MeshMembers tells this relay's instance number (0: none) and the mesh
// addresses of the others, as they change. *mesh.Directory is one.
type MeshMembers interface {
	Self() uint16
	Lookup(instance uint16) (netip.AddrPort, bool)
}

// home returns the mesh address of the instance a ticket names when the
// packet must leave from there: another instance this one knows and heard
// from lately. A dead home (its region down: the front door has moved its
// peers' flows elsewhere) gets nothing; the packet leaves from here. A
// suspect home (mesh.SuspectAfter without a heartbeat) is returned with
// suspect set: the packet goes through it and from here too.
func (s *Server) home(instance uint16) (a netip.AddrPort, ok, suspect bool) {
	if instance == 0 || s.cfg.Mesh == nil || instance == s.members.Self() {
		return netip.AddrPort{}, false, false
	}
	a, ok = s.members.Lookup(instance)
	if !ok || !s.cfg.Mesh.Alive(a) {
		return netip.AddrPort{}, false, false
	}
	return a, true, s.cfg.Mesh.Suspect(a)
}

// viaHome hands a Relayed frame for dst to the instance that holds dst's
// flow and reports whether the mesh took it. On failure the caller forwards
// the frame itself (right with plain BGP anycast, best effort otherwise).
//
// A home that has missed heartbeats may be dead well before the mesh gives
// it up (mesh.DeadAfter): a killed instance's peers lose every packet
// handed to it until then, although the front door has moved their flows
// here by the time two health checks failed. So a frame for a suspect home
// goes both ways: through the home, and (false) from here. Behind a front
// door that has not moved dst's flow, the copy from here is dropped by
// dst's NAT; with BGP anycast dst gets it twice, which QUIC ignores.
//
// The copy from here takes another token of src's rate towards dst (the
// frame paid for one): a home made to look suspect (its heartbeats lost
// on a congested path between regions) must not double what a ticket
// holder may aim at dst. With
// no token left the frame goes through the home alone.
func (w *worker) viaHome(instance uint16, frame []byte, src, dst netip.AddrPort, nowNs int64) bool {
	home, ok, suspect := w.s.home(instance)
	if !ok {
		return false
	}
	var err error
	w.meshBuf, err = w.s.cfg.Mesh.Send(w.meshBuf, home, mesh.KindRelayed, dst, frame)
	if err != nil {
		w.s.log.Debug("relay: forward through the home instance failed; sending from here", "instance", instance, "err", err)
		return false
	}
	return !suspect || !w.s.lim.send.AllowPair(src.Addr(), dst.Addr(), nowNs)
}

// DeliverRelayed is the mesh handler of a relay instance: it sends the
// Relayed frames other instances forward for the peers whose flows this
// instance holds, from conn, the relay socket those peers bound to.
// Anything but a Relayed frame is dropped.
func DeliverRelayed(conn interface {
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
}, log *slog.Logger) mesh.Handler {
	return func(kind mesh.Kind, dst netip.AddrPort, payload []byte) {
		if kind != mesh.KindRelayed || len(payload) < wire.HeaderLen || payload[0] != wire.TypeRelayed {
			log.Debug("mesh: dropped a forward that is not a Relayed frame", "kind", kind)
			return
		}
		if _, err := conn.WriteToUDPAddrPort(payload, dst); err != nil {
			log.Debug("mesh: relayed send failed", "to", dst, "err", err)
		}
	}
}
