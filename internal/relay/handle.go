package relay

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/mesh"
	"github.com/keymesh/keymesh/internal/wire"
)

// action is what to do with a datagram.
type action uint8

const (
	actDrop    action = iota
	actForward        // send out (a suffix of the datagram) to the ticket's address
	actReply          // send out (a RelayBound) back to the source
)

// offset of the clock in a RelayBind frame (after the header and the key).
const bindTimeOff = wire.HeaderLen + 32

// worker is one Serve loop's private state: its counts and the scratch
// memory that keeps the hot path free of allocations.
type worker struct {
	s       *Server
	st      stats
	scratch crypto.TicketScratch
	ticket  []byte
	meshBuf []byte // a mesh message being sent (viaHome)
}

func (s *Server) newWorker() *worker {
	w := &worker{s: s, ticket: make([]byte, 0, crypto.TicketSize)}
	if s.cfg.Mesh != nil {
		w.meshBuf = make([]byte, 0, mesh.MaxMessage)
	}
	return w
}

// handle decides what to do with the datagram pkt that came from src at
// now (Unix ns and time). For actForward, out is a suffix of pkt, rewritten
// in place into a Relayed frame, and dst is the address inside its ticket.
// For actReply, out is a RelayBound written into reply (capacity at least
// wire.RelayBoundLen) and goes back to src. Either way out is never larger
// than pkt. A dropped datagram is counted by reason in w.st; what is sent is
// counted by the caller once the kernel took it.
func (w *worker) handle(pkt []byte, src netip.AddrPort, now time.Time, nowNs int64, reply []byte) (act action, out []byte, dst netip.AddrPort) {
	s := w.s
	w.st.received++
	if len(pkt) < wire.HeaderLen || !src.IsValid() {
		w.st.drop(reasonMalformed)
		return actDrop, nil, dst
	}
	var cost float64
	switch pkt[0] {
	case wire.TypeRelaySend:
		cost = 1
	case wire.TypeRelayBind:
		cost = s.cfg.RateLimit.BindCost
	default:
		w.st.drop(reasonMalformed)
		return actDrop, nil, dst
	}
	if !s.lim.allow(src, nowNs, cost) {
		w.st.drop(reasonRateLimited)
		return actDrop, nil, dst
	}
	if pkt[1] != wire.Version {
		w.st.drop(reasonBadVersion)
		return actDrop, nil, dst
	}
	if len(pkt) > wire.MaxFrame {
		w.st.drop(reasonMalformed)
		return actDrop, nil, dst
	}
	if pkt[0] == wire.TypeRelaySend {
		return w.send(pkt)
	}
	return w.bind(pkt, src, now, nowNs, reply)
}

// send opens a RelaySend's ticket and rewrites the frame for forwarding.
func (w *worker) send(pkt []byte) (action, []byte, netip.AddrPort) {
	if len(pkt) < wire.RelaySendOverhead {
		w.st.drop(reasonTruncated)
		return actDrop, nil, netip.AddrPort{}
	}
	t, err := w.s.cfg.Keys.OpenWith(&w.scratch, pkt[wire.HeaderLen:wire.HeaderLen+crypto.TicketSize])
	if err != nil {
		w.st.drop(ticketReason(err))
		return actDrop, nil, netip.AddrPort{}
	}
	out := wire.RelayedFromSend(pkt)
	if w.viaHome(t.Instance, out, t.Addr) {
		return actDrop, nil, netip.AddrPort{} // sent by the mesh, nothing to send here
	}
	return actForward, out, t.Addr
}

func ticketReason(err error) reason {
	switch {
	case errors.Is(err, crypto.ErrTicketTruncated):
		return reasonTruncated
	case errors.Is(err, crypto.ErrTicketUnknown):
		return reasonUnknownKey
	case errors.Is(err, crypto.ErrTicketExpired):
		return reasonExpired
	default:
		return reasonForged
	}
}

// bind checks a RelayBind (size, clock, global budget, signature, in order
// of cost) and answers with a ticket for the address it came from.
func (w *worker) bind(pkt []byte, src netip.AddrPort, now time.Time, nowNs int64, reply []byte) (action, []byte, netip.AddrPort) {
	s := w.s
	if len(pkt) < wire.RelayBindMin {
		w.st.drop(reasonTruncated)
		return actDrop, nil, netip.AddrPort{}
	}
	sent := int64(binary.BigEndian.Uint64(pkt[bindTimeOff:]))
	skew := now.UnixMilli() - sent
	if skew < -s.cfg.ClockSkew.Milliseconds() || skew > s.cfg.ClockSkew.Milliseconds() {
		w.st.drop(reasonStaleTime)
		return actDrop, nil, netip.AddrPort{}
	}
	if !s.lim.allowBind(nowNs) {
		w.st.drop(reasonRateLimited)
		return actDrop, nil, netip.AddrPort{}
	}
	id, _, err := wire.ParseRelayBind(pkt)
	if err != nil {
		w.st.drop(reasonBadSignature)
		return actDrop, nil, netip.AddrPort{}
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	expiry := now.Add(s.cfg.TicketTTL)
	w.ticket = s.cfg.Keys.Seal(w.ticket[:0], crypto.Ticket{Addr: src, ID: id, Expiry: expiry, Instance: s.cfg.Instance})
	return actReply, wire.AppendRelayBound(reply[:0], w.ticket, src, expiry), src
}
