package rzclient

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/keymesh/keymesh/internal/crypto"
)

// serverForm is the expected form of a connect string, for error messages.
const serverForm = "host:port#<server-peer-id>"

// ParseServer parses a rendezvous connect string "host:port#<server-peer-id>"
// (as the rendezvous prints at start), resolving host names.
func ParseServer(s string) (netip.AddrPort, crypto.PeerID, error) {
	hostport, id, err := splitServer(s)
	if err != nil {
		return netip.AddrPort{}, id, err
	}
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), id, nil
	}
	ua, err := net.ResolveUDPAddr("udp", hostport)
	if err != nil {
		return netip.AddrPort{}, id, fmt.Errorf("%w %q: cannot resolve %s: %v", ErrBadServer, s, hostport, err)
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), id, nil
}

// splitServer checks the form of a connect string without resolving it.
func splitServer(s string) (hostport string, id crypto.PeerID, err error) {
	s = strings.TrimSpace(s)
	i := strings.LastIndexByte(s, '#')
	if i < 0 {
		return "", id, fmt.Errorf("%w %q: want %s (the server key is missing)", ErrBadServer, abbrev(s), serverForm)
	}
	hostport = s[:i]
	id, err = crypto.ParsePeerID(s[i+1:])
	if err != nil {
		return "", id, fmt.Errorf("%w %q: want %s: the part after '#' is not a peer ID", ErrBadServer, abbrev(s), serverForm)
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || host == "" || port == "" {
		return "", id, fmt.Errorf("%w %q: want %s: %q is not host:port", ErrBadServer, abbrev(s), serverForm, abbrev(hostport))
	}
	return hostport, id, nil
}

// target is a parsed connect target: a peer ID or an overlay address.
type target struct {
	id   crypto.PeerID
	addr netip.Addr
}

func (t target) String() string {
	if t.addr.IsValid() {
		return t.addr.String()
	}
	return t.id.String()
}

// parseTarget accepts a peer ID or an overlay IPv6 address.
func parseTarget(s string) (target, error) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		a = a.Unmap()
		if !crypto.IsOverlay(a) {
			return target{}, fmt.Errorf("%q: %w: the address is outside the overlay prefix %s", abbrev(s), ErrBadTarget, crypto.OverlayPrefix)
		}
		return target{addr: a.WithZone("")}, nil
	}
	id, err := crypto.ParsePeerID(s)
	if err != nil {
		return target{}, fmt.Errorf("%q: %w: want a peer ID (%d base32 characters) or an overlay address (%s)", abbrev(s), ErrBadTarget, crypto.PeerIDLen, crypto.OverlayPrefix)
	}
	if id.IsZero() {
		return target{}, fmt.Errorf("%q: %w: the all-zero key is nobody's peer ID", abbrev(s), ErrBadTarget)
	}
	return target{id: id}, nil
}

func abbrev(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
