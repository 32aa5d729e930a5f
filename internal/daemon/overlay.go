package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
)

// Userspace mode (Config.Overlay): the daemon reaches and serves the
// overlay address through the userspace TCP/IP stack.

// Bounds of the UDP relays.
const (
	// MaxUDPFlows bounds the remote sources one exposed UDP port, or one
	// SOCKS5 association, keeps a socket for; a new one past it replaces
	// the least recently used.
	MaxUDPFlows = 256
	// UDPIdle ends a UDP flow that carried nothing for this long.
	UDPIdle = 2 * time.Minute
)

// ErrNoOverlay answers a UDP request to a daemon without userspace mode.
var ErrNoOverlay = errors.New("UDP needs the daemon in userspace mode (`peer up --userspace`) or TUN mode")

// overlayAddr returns the overlay address of peer: a name or peer ID under
// the names suffix (Config.Names), a peer ID, or an overlay address.
func (s *Server) overlayAddr(peer string) (netip.Addr, error) {
	dst, err := s.resolvePeer(peer)
	if err != nil {
		return netip.Addr{}, err
	}
	if a, err := netip.ParseAddr(dst); err == nil {
		return a, nil
	}
	id, err := crypto.ParsePeerID(dst)
	if err != nil {
		return netip.Addr{}, err
	}
	return id.OverlayAddr(), nil
}

// dialUDP handles POST /v1/dial?proto=udp: a UDP socket of the userspace
// stack connected to peer's port, its datagrams framed over the upgraded
// API connection.
func (s *Server) dialUDP(w http.ResponseWriter, r *http.Request, peer string, port uint16) {
	if s.cfg.Overlay == nil {
		writeError(w, http.StatusBadRequest, ErrNoOverlay)
		return
	}
	addr, err := s.overlayAddr(peer)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	uc, err := s.cfg.Overlay.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(addr, port))
	if err != nil {
		writeError(w, http.StatusBadGateway, err)
		return
	}
	res := s.results.add()
	api, err := upgrade(w, peer, res.id)
	if err != nil {
		uc.Close()
		res.finish(err)
		return
	}
	if !s.track(api) {
		api.Close()
		uc.Close()
		res.finish(net.ErrClosed)
		return
	}
	s.track(uc)
	defer s.untrack(api)
	defer s.untrack(uc)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, MaxFrame)
		for {
			n, err := uc.Read(buf)
			if err != nil {
				api.Close()
				return
			}
			if WriteFrame(api, buf[:n]) != nil {
				uc.Close()
				return
			}
		}
	}()
	buf := make([]byte, MaxFrame)
	for {
		b, err := ReadFrame(api, buf)
		if err != nil {
			break
		}
		if _, err := uc.Write(b); err != nil {
			break
		}
	}
	uc.Close()
	api.Close()
	<-done
	res.finish(nil)
}

// exposeOverlay serves port on the overlay address through the userspace
// stack: TCP connections go to 127.0.0.1:port over TCP, UDP datagrams to
// 127.0.0.1:port over UDP. It returns the function that stops both.
func (s *Server) exposeOverlay(port uint16) (func(), error) {
	me := netip.AddrPortFrom(s.node.OverlayAddr(), port)
	tl, err := s.cfg.Overlay.ListenTCPAddrPort(me)
	if err != nil {
		return nil, fmt.Errorf("expose port %d on the overlay address: %w", port, err)
	}
	ul, err := s.cfg.Overlay.ListenUDPAddrPort(me)
	if err != nil {
		tl.Close()
		return nil, fmt.Errorf("expose UDP port %d on the overlay address: %w", port, err)
	}
	e := &portEntry{ln: tl, expose: true}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.exposeLoop(port, e)
	}()
	go func() {
		defer s.wg.Done()
		s.exposeUDP(port, ul)
	}()
	return func() {
		tl.Close()
		ul.Close()
	}, nil
}

// udpFlow is one remote source of an exposed UDP port, with its own socket
// to the local service.
type udpFlow struct {
	local net.Conn
	last  time.Time
}

// exposeUDP relays the datagrams arriving at an exposed UDP port to the
// local service, one local socket per remote source (at most MaxUDPFlows),
// and the service's answers back.
func (s *Server) exposeUDP(port uint16, ul net.PacketConn) {
	var mu sync.Mutex
	flows := map[string]*udpFlow{}
	defer func() {
		mu.Lock()
		for _, f := range flows {
			f.local.Close()
		}
		mu.Unlock()
	}()
	stop := context.AfterFunc(s.ctx, func() { ul.Close() })
	defer stop()
	buf := make([]byte, MaxFrame)
	for {
		n, from, err := ul.ReadFrom(buf)
		if err != nil {
			return
		}
		key := from.String()
		mu.Lock()
		f := flows[key]
		if f == nil {
			if len(flows) >= MaxUDPFlows {
				evictOldest(flows)
			}
			ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
			local, err := s.cfg.DialLocal(ctx, "udp", localTarget(port))
			cancel()
			if err != nil {
				mu.Unlock()
				s.log.Info("exposed UDP port: local service unreachable", "port", port, "err", err)
				continue
			}
			f = &udpFlow{local: local}
			flows[key] = f
			go func() {
				b := make([]byte, MaxFrame)
				for {
					local.SetReadDeadline(time.Now().Add(UDPIdle))
					n, err := local.Read(b)
					if err != nil {
						break
					}
					ul.WriteTo(b[:n], from)
				}
				local.Close()
				mu.Lock()
				if flows[key] == f {
					delete(flows, key)
				}
				mu.Unlock()
			}()
		}
		f.last = time.Now()
		mu.Unlock()
		f.local.Write(buf[:n])
	}
}

// evictOldest closes and removes the least recently used flow.
func evictOldest(flows map[string]*udpFlow) {
	var oldKey string
	var old *udpFlow
	for k, f := range flows {
		if old == nil || f.last.Before(old.last) {
			oldKey, old = k, f
		}
	}
	if old != nil {
		old.local.Close()
		delete(flows, oldKey)
	}
}

// dialOverlayTCP connects to port of peer through the userspace stack.
func (s *Server) dialOverlayTCP(ctx context.Context, peer string, port uint16) (net.Conn, error) {
	addr, err := s.overlayAddr(peer)
	if err != nil {
		return nil, err
	}
	c, err := s.cfg.Overlay.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(addr, port))
	if err != nil {
		return nil, fmt.Errorf("connect to [%s]:%s over the overlay: %w", addr, strconv.Itoa(int(port)), err)
	}
	return c, nil
}
