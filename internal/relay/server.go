package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/keymesh/keymesh/internal/mesh"
	"github.com/keymesh/keymesh/internal/wire"
)

// Server is a stateless ticket relay. One Server may serve several sockets
// at once; it holds no per-peer or per-flow state beyond the rate limiters'
// bounded tables.
type Server struct {
	cfg Config
	log *slog.Logger
	lim limits
	// cookieSecret keys the bind cookies (crypto.TicketKeys.CookieSecret).
	cookieSecret []byte
	m            *metrics
	serving      atomic.Int32
	// members is Config.Members, or a fixed one from Instance and
	// MeshPeers.
	members MeshMembers
}

// New checks cfg and makes a Server. It does not listen: hand it sockets
// with Serve.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	members := cfg.Members
	if members == nil {
		members = mesh.NewDirectory(cfg.Instance, cfg.MeshPeers)
	}
	return &Server{
		cfg:          cfg,
		log:          cfg.Logger,
		lim:          newLimits(cfg.RateLimit, cfg.Now().UnixNano()),
		cookieSecret: cfg.Keys.CookieSecret(),
		m:            m,
		members:      members,
	}, nil
}

// Healthy reports whether at least one Serve loop is running; it is the
// relay's health check (obs.Admin.AddHealth).
func (s *Server) Healthy(context.Context) error {
	if s.serving.Load() == 0 {
		return ErrNotServing
	}
	return nil
}

// Serve reads datagrams from conn and answers or forwards them until ctx
// ends (then it returns nil) or conn fails. It may be called concurrently
// for several sockets, such as an SO_REUSEPORT group. When ctx ends, Serve
// sets conn's deadline to the past to stop its reads; the caller still owns
// and closes conn.
//
// A *net.UDPConn is served in batches (recvmmsg/sendmmsg on Linux) with no
// allocation per packet; any other net.PacketConn one datagram at a time.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	s.serving.Add(1)
	s.m.sockets.Inc()
	defer func() {
		s.serving.Add(-1)
		s.m.sockets.Dec()
	}()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	s.log.Debug("relay serving", "addr", conn.LocalAddr().String())
	w := s.newWorker()
	var err error
	uc, isUDP := conn.(*net.UDPConn)
	switch {
	case isUDP && s.cfg.Batch > 1:
		err = w.serveBatch(uc)
	case isUDP:
		err = w.serveUDP(uc)
	default:
		err = w.servePacketConn(conn)
	}
	s.m.flush(&w.st)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("relay serve %s: %w", conn.LocalAddr(), err)
}

// fatal tells a read error that ends the loop (closed socket, deadline)
// from one worth retrying.
func fatal(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded)
}

// transient handles a retryable I/O error: log it, and back off a little
// when they come in a row so that a broken socket cannot spin a core.
func (w *worker) transient(op string, err error, streak *int) {
	*streak++
	w.s.log.Debug("relay "+op+" error", "err", err, "in_a_row", *streak)
	if *streak > 8 {
		time.Sleep(time.Millisecond)
	}
}

// serveUDP serves a *net.UDPConn one datagram at a time (no batching), still
// without allocating per packet.
func (w *worker) serveUDP(c *net.UDPConn) error {
	buf := make([]byte, wire.MaxFrame+1)
	reply := make([]byte, 0, wire.RelayBoundLen)
	send := func(_ action, out []byte, dst netip.AddrPort) error {
		_, err := c.WriteToUDPAddrPort(out, dst)
		return err
	}
	streak := 0
	for {
		n, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if fatal(err) {
				return err
			}
			w.transient("read", err, &streak)
			continue
		}
		streak = 0
		if err := w.step(buf[:n], unmap(src), reply, send); err != nil {
			return err
		}
	}
}

// servePacketConn serves any net.PacketConn one datagram at a time.
func (w *worker) servePacketConn(c net.PacketConn) error {
	buf := make([]byte, wire.MaxFrame+1)
	reply := make([]byte, 0, wire.RelayBoundLen)
	var from net.Addr // the current datagram's source, as the conn gave it
	send := func(act action, out []byte, dst netip.AddrPort) error {
		var to net.Addr = net.UDPAddrFromAddrPort(dst)
		if act.toSource() {
			to = from
		}
		_, err := c.WriteTo(out, to)
		return err
	}
	streak := 0
	for {
		n, addr, err := c.ReadFrom(buf)
		if err != nil {
			if fatal(err) {
				return err
			}
			w.transient("read", err, &streak)
			continue
		}
		streak = 0
		from = addr
		if err := w.step(buf[:n], addrPort(addr), reply, send); err != nil {
			return err
		}
	}
}

// step handles one datagram and sends its answer, if any, with send. It
// returns only a send error that ends the socket.
func (w *worker) step(pkt []byte, src netip.AddrPort, reply []byte, send func(action, []byte, netip.AddrPort) error) error {
	now := w.s.cfg.Now()
	w.forget()
	act, out, dst := w.handle(pkt, src, now, now.UnixNano(), reply)
	if act != actDrop {
		err := send(act, out, dst)
		w.sent(act, 1, len(out), err)
		if err != nil && fatal(err) {
			return err
		}
	}
	w.s.m.flush(&w.st)
	return nil
}

// sent counts a forward of segs datagrams and n bytes, or a reply, that
// the kernel took (err nil) or refused.
func (w *worker) sent(act action, segs, n int, err error) {
	switch {
	case err != nil:
		w.st.dropped[reasonSendFailed] += uint64(segs)
		w.s.log.Debug("relay send failed", "err", err)
	case act == actForward:
		w.st.forwarded += uint64(segs)
		w.st.fwdBytes += uint64(n)
	case act == actReply:
		w.st.binds++
	case act == actChallenge:
		w.st.challenges++
	}
}

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// addrPort converts a net.Addr to an AddrPort; the zero AddrPort when it is
// not an IP address and port.
func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		return unmap(a.AddrPort())
	case nil:
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return unmap(ap)
}
