package pathsock

import (
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/nat"
	"github.com/keymesh/keymesh/internal/wire"
)

// MaxPayload is the largest QUIC packet the layer carries: a 1500-byte MTU
// minus IPv6 and UDP headers (48) minus the largest frame header, RelaySend
// (wire.RelaySendOverhead). Give it to quic-go as Config.InitialPacketSize
// with DisablePathMTUDiscovery.
const MaxPayload = 1500 - 48 - wire.RelaySendOverhead

// Config configures a Sock. Identity is required; every other field has a
// default.
type Config struct {
	// Identity is this peer's key.
	Identity *crypto.Identity
	// Conn is a socket the caller opened; when nil the layer opens one on
	// ListenAddr (default ":0", both address families).
	Conn       PacketConn
	ListenAddr string

	// ServerKey is the rendezvous server's key: sealed frames from it, and
	// the rendezvous' unsealed CookieReplies, go to OnServerFrame (the
	// rendezvous client's HandleFrame). The slice is only valid during the
	// call.
	ServerKey     crypto.PeerID
	OnServerFrame func(b []byte, from netip.AddrPort) bool
	// OnSTUN receives STUN messages (the slice is only valid during the
	// call).
	OnSTUN func(b []byte, from netip.AddrPort)
	// OnLocalChange is called (in its own goroutine) when this peer's
	// candidates or relay tickets changed: the rendezvous client should
	// re-register.
	OnLocalChange func()
	// NAT returns this peer's NAT mapping behaviour (a wire.NAT* value)
	// for the PathUpdates it sends and to choose a punching strategy;
	// default Sock.NATBehaviour.
	NAT func() wire.NAT

	// ListenExtra opens one extra UDP socket for birthday-paradox punching
	// (the hard side opens nat.BirthdaySockets of them); default: a new
	// port on the main socket's address.
	ListenExtra func() (*net.UDPConn, error)

	// NoDirect refuses direct paths: nothing direct is probed, direct
	// probes are not answered; peers are reached through the relay only.
	NoDirect bool
	// DropDirect, when set, is asked for every direct (not relayed) frame
	// sent to or received from a peer's address; true drops it. A test
	// hook: it cuts the direct path.
	DropDirect func(remote netip.AddrPort) bool
	// Interfaces lists local addresses; default nat.InterfaceAddrs.
	Interfaces func() ([]netip.Addr, error)
	// LocalPrefixes lists this peer's own LAN prefixes: a peer's private
	// (RFC 1918, fc00::/7, 100.64.0.0/10) candidates are probed only when
	// they lie on one. Default: the interfaces' prefixes when Interfaces
	// is not set, else each address of Interfaces alone.
	LocalPrefixes func() ([]netip.Prefix, error)
	// Resolve resolves a relay's host:port; default net.DefaultResolver.
	Resolve func(hostport string) (netip.AddrPort, error)

	// Limits bound what the layer sends on a stranger's word (reflection);
	// zero fields take the defaults.
	Limits Limits

	// QueueLen is how many received QUIC packets wait for the reader
	// before more are dropped; default 2048.
	QueueLen int
	// Logger defaults to a discarding logger; Now to time.Now.
	Logger *slog.Logger
	Now    func() time.Time
}

func (c *Config) setDefaults() {
	c.Limits = c.Limits.withDefaults()
	if c.ListenAddr == "" {
		c.ListenAddr = ":0"
	}
	if c.LocalPrefixes == nil {
		if c.Interfaces == nil {
			c.LocalPrefixes = interfacePrefixes
		} else {
			ifs := c.Interfaces
			c.LocalPrefixes = func() ([]netip.Prefix, error) {
				as, err := ifs()
				out := make([]netip.Prefix, 0, len(as))
				for _, a := range as {
					a = a.Unmap()
					out = append(out, netip.PrefixFrom(a, a.BitLen()))
				}
				return out, err
			}
		}
	}
	if c.Interfaces == nil {
		c.Interfaces = nat.InterfaceAddrs
	}
	if c.Resolve == nil {
		c.Resolve = resolveUDP
	}
	if c.QueueLen <= 0 {
		c.QueueLen = 2048
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// VirtualAddr is the address at which QUIC sees the peer id.
func VirtualAddr(id crypto.PeerID) *net.UDPAddr {
	return &net.UDPAddr{IP: id.OverlayAddr().AsSlice(), Port: 1}
}
