package names

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/keymesh/keymesh/internal/crypto"
)

// ErrNotLocal is a DNS listen address that is neither loopback nor an
// overlay address.
var ErrNotLocal = errors.New("the DNS server listens only on loopback or an overlay address")

// Server answers DNS queries over UDP from a Table.
type Server struct {
	Table *Table
	// Logger; default discards.
	Logger *slog.Logger
}

// localSource reports whether a query may come from addr: this host
// (loopback) or a peer's overlay address (the TUN device, the userspace
// netstack). Anything else is dropped unanswered.
func localSource(addr netip.Addr) bool {
	addr = addr.Unmap()
	return addr.IsLoopback() || crypto.IsOverlay(addr)
}

// ListenDNS opens a UDP socket for Serve on addr, which must be a loopback
// or overlay address (e.g. 127.0.0.1:5353, [::1]:53, [<overlay>]:53).
func ListenDNS(ctx context.Context, addr string) (net.PacketConn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dns listen address %q: want ip:port: %w", addr, err)
	}
	if !localSource(ap.Addr()) {
		return nil, fmt.Errorf("dns listen address %s: %w", addr, ErrNotLocal)
	}
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", ap.String())
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	return pc, nil
}

// Serve answers queries on pc until ctx ends or pc fails; it closes pc
// when ctx ends.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn) error {
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	buf := make([]byte, maxAnswer)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dns: %w", err)
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok || !localSource(ua.AddrPort().Addr()) {
			continue
		}
		if resp := Answer(s.Table, buf[:n]); resp != nil {
			if _, err := pc.WriteTo(resp, from); err != nil {
				log.Debug("dns: answer not sent", "to", from.String(), "err", err)
			}
		}
	}
}
