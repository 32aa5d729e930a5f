package pathsock

import (
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/keymesh/keymesh/internal/wire"
)

var _ net.PacketConn = (*Sock)(nil)

// ReadFrom returns the next QUIC packet from any peer, with the peer's
// virtual address. It honours SetReadDeadline.
func (s *Sock) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case pk := <-s.in:
		return s.deliver(p, pk)
	default:
	}
	for {
		s.dlMu.Lock()
		dl, wake := s.deadline, s.dlWake
		s.dlMu.Unlock()
		var timeout <-chan time.Time
		var timer *time.Timer
		if !dl.IsZero() {
			// A deadline is wall-clock time (net.PacketConn), not the
			// layer's clock.
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(d)
			timeout = timer.C
		}
		select {
		case pk := <-s.in:
			stopTimer(timer)
			return s.deliver(p, pk)
		case <-s.closed:
			stopTimer(timer)
			return 0, nil, net.ErrClosed
		case <-wake:
			stopTimer(timer)
		case <-timeout:
			return 0, nil, os.ErrDeadlineExceeded
		}
	}
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

func (s *Sock) deliver(p []byte, pk inPacket) (int, net.Addr, error) {
	n := copy(p, (*pk.bp)[pk.off:pk.off+pk.n])
	s.putBuf(pk.bp)
	return n, pk.from, nil
}

// WriteTo sends a QUIC packet to the peer at a virtual address over its
// active path. Like UDP it drops what it cannot send (no path yet, socket
// trouble) without an error: quic-go ends a connection on any write error,
// and retransmits what was lost. It fails only once the Sock is closed.
func (s *Sock) WriteTo(p []byte, addr net.Addr) (int, error) {
	if s.isClosed() {
		return 0, net.ErrClosed
	}
	pr := s.peerByNetAddr(addr)
	if pr == nil || len(p) > wire.MaxFrame-wire.RelaySendOverhead {
		s.stats.Dropped.Add(1)
		return len(p), nil
	}
	now := s.now().UnixNano()
	pr.lastSent.Store(now)
	pr.resent.add(p, now)
	s.sendOn(pr, pr.route.Load(), p)
	return len(p), nil
}

// sendOn frames QUIC packet p for route r to pr and sends it.
func (s *Sock) sendOn(pr *peer, r *route, p []byte) {
	switch r.kind {
	case PathDirect:
		if s.dropDirect(r.addr) {
			s.stats.Dropped.Add(1)
			return
		}
		bp := s.getBuf()
		b := wire.AppendData((*bp)[:0], s.myTag, p)
		if r.via != nil {
			// A birthday path: from its own socket, one by one.
			if s.sendVia(b, r.addr, r.via) {
				s.stats.DirectSent.Add(1)
			}
			s.putBuf(bp)
			return
		}
		if s.output(bp, len(b), r.addr) {
			s.stats.DirectSent.Add(1)
		}
	case PathRelay:
		relay := s.relay.chosenAddr()
		if !relay.IsValid() {
			s.stats.Dropped.Add(1)
			return
		}
		bp := s.getBuf()
		b := wire.AppendRelaySend((*bp)[:0], r.ticket, s.myTag, p)
		if s.output(bp, len(b), relay) {
			s.stats.RelaySent.Add(1)
		}
	default:
		s.stats.Dropped.Add(1)
	}
}

func (s *Sock) peerByNetAddr(addr net.Addr) *peer {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return nil
	}
	ip, ok := netip.AddrFromSlice(ua.IP)
	if !ok {
		return nil
	}
	s.mu.RLock()
	pr := s.byAddr[ip.Unmap()]
	s.mu.RUnlock()
	return pr
}

// LocalAddr returns this peer's own virtual address.
func (s *Sock) LocalAddr() net.Addr { return s.vaddr }

// SetDeadline sets the read deadline (writes never block).
func (s *Sock) SetDeadline(t time.Time) error { return s.SetReadDeadline(t) }

// SetReadDeadline makes ReadFrom return os.ErrDeadlineExceeded after t.
func (s *Sock) SetReadDeadline(t time.Time) error {
	s.dlMu.Lock()
	s.deadline = t
	close(s.dlWake)
	s.dlWake = make(chan struct{})
	s.dlMu.Unlock()
	return nil
}

// SetWriteDeadline is a no-op: writes never block.
func (s *Sock) SetWriteDeadline(time.Time) error { return nil }

// SetReadBuffer sets the real socket's receive buffer (quic-go asks).
func (s *Sock) SetReadBuffer(n int) error { return s.conn.Load().SetReadBuffer(n) }

// SetWriteBuffer sets the real socket's send buffer (quic-go asks).
func (s *Sock) SetWriteBuffer(n int) error { return s.conn.Load().SetWriteBuffer(n) }

// Stats returns the layer's counters.
func (s *Sock) Stats() *Stats { return &s.stats }
