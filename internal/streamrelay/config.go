package streamrelay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/addrpolicy"
	"github.com/keymesh/keymesh/internal/obs"

	"github.com/keymesh/keymesh/internal/streamclient"
)

// TunnelMemory is about what one idle tunnel costs the relay process in
// resident memory: its TLS connection, WebSocket buffers, presence
// socket, two goroutines and the garbage collector's headroom
// (TestIdleTunnelMemory measured 25 KB live and 37 KB resident per
// tunnel over 1,000 tunnels; the kernel's socket memory comes on top).
// MaxTunnels times it is the memory an attacker holding every tunnel
// takes.
const TunnelMemory = 40 << 10

// Defaults of the limits in Config. Each is a relay flag (relaycmd).
const (
	// DefaultMaxTunnels fits the tunnels in about 400 MiB
	// (TunnelMemory each).
	DefaultMaxTunnels       = 10000
	DefaultMaxTunnelsPerIP  = 64
	DefaultMaxTunnelsPerNet = 512
	DefaultOpenRate         = 2 // tunnels per second per client IPv4 address or IPv6 /64
	DefaultOpenBurst        = 32
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultIdleTimeout      = 2 * time.Minute
	DefaultWriteTimeout     = 10 * time.Second
	DefaultRate             = 4000    // datagrams per second per tunnel and direction
	DefaultBurst            = 1000    // datagrams
	DefaultByteRate         = 4 << 20 // payload bytes per second per tunnel and direction
	DefaultIPByteRate       = 16 << 20
	DefaultMaxDestinations  = 256
	DefaultProbeRate        = 10 // datagrams per second to a destination that has not answered
	DefaultProbeBurst       = 20
	// DefaultUnsolicitedRate and DefaultUnsolicitedBurst bound what a
	// tunnel carries from sources it has not sent to: a few peers'
	// punching probes and first packets at once, about 300 KB/s at most.
	DefaultUnsolicitedRate  = 200
	DefaultUnsolicitedBurst = 400
	DefaultDestinationTTL   = 30 * time.Second
	DefaultMaxHeaderBytes   = 8 << 10
	// DefaultServerRate and DefaultServerBurst bound what one tunnel sends
	// to the keymesh servers (ServerAddrs, ServerPorts), RelaySend data
	// aside: what one peer needs (a Register every 20 s with its cookie
	// round trip, Connects, binds, STUN), not what a flood needs.
	DefaultServerRate  = 5
	DefaultServerBurst = 50
)

// Config configures a stream relay Server. Every limit has a default used
// when the field is zero.
type Config struct {
	// PresenceIP is the address the tunnels' UDP sockets bind to: the
	// public address, a private one, or the unspecified address. Required.
	PresenceIP netip.Addr
	// AdvertiseIP is the address a tunnel is told its presence has, the
	// one the rest of the world reaches it at (on AWS the public IPv4,
	// which is not on the interface). Default PresenceIP, which must then
	// be specific.
	AdvertiseIP netip.Addr

	// AllowDestinations are ranges the relay sends to although
	// addrpolicy refuses them (an operator's own network, a lab).
	AllowDestinations []netip.Prefix
	// OwnAddrs are this server's own addresses, refused as destinations
	// (default: the host's interface addresses, addrpolicy.LocalAddrs).
	// PresenceIP and AdvertiseIP are always added.
	OwnAddrs []netip.Addr
	// OwnPorts are the UDP ports of this host's public keymesh services
	// (its ticket relay, TURN, a rendezvous on the same host) that a
	// tunnel may reach at any of the server's own addresses but loopback
	// and link-local (AdvertiseIP, PresenceIP, OwnAddrs: an anycast
	// address on the interface); other tunnels' presence ports are
	// reachable there too, every other port of the server's own addresses
	// is refused.
	OwnPorts []uint16

	// ServerAddrs are the UDP addresses of keymesh servers elsewhere (a
	// rendezvous, another ticket relay) and ServerPorts the ports of those
	// on this host's own addresses (the ticket relay, a rendezvous; each
	// must be in OwnPorts too). Those servers limit per source address,
	// and every tunnel reaches them from the one presence address: so
	// that one tunnel cannot spend what they allow that address, each
	// tunnel may send them ServerRate datagrams per second, all of them
	// together, with a burst of ServerBurst (default DefaultServerRate,
	// DefaultServerBurst). A ticket relay's RelaySend frames, the data a
	// peer relays, count only against the tunnel's Rate.
	ServerAddrs []netip.AddrPort
	ServerPorts []uint16
	ServerRate  float64
	ServerBurst float64

	// MaxTunnels bounds open tunnels, those still in their handshake
	// included (default DefaultMaxTunnels).
	MaxTunnels int
	// MaxTunnelsPerIP bounds the tunnels of one client IPv4 address or
	// IPv6 /64 (default DefaultMaxTunnelsPerIP).
	MaxTunnelsPerIP int
	// MaxTunnelsPerNet bounds the tunnels of one client IPv4 /24 or IPv6
	// /48 (default DefaultMaxTunnelsPerNet).
	MaxTunnelsPerNet int
	// OpenRate and OpenBurst bound how fast one client IPv4 address or
	// IPv6 /64 opens tunnels, and, with a bucket of their own, TCP
	// connections when the listener is wrapped with Server.Listener
	// (default DefaultOpenRate, DefaultOpenBurst).
	OpenRate  float64
	OpenBurst float64
	// HandshakeTimeout bounds the client hello after the upgrade (the
	// HTTP server's header timeout bounds TLS and the request; relaycmd
	// sets it to the same value). Default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a tunnel whose client has sent no datagram for
	// that long (default DefaultIdleTimeout; peers send a keepalive to
	// the rendezvous at least every 20 s).
	IdleTimeout time.Duration
	// WriteTimeout closes a tunnel whose client does not take a datagram
	// within it (default DefaultWriteTimeout).
	WriteTimeout time.Duration
	// Rate and Burst bound each tunnel's datagrams per second in each
	// direction (default DefaultRate and DefaultBurst).
	Rate  float64
	Burst int
	// ByteRate bounds each tunnel's payload bytes per second in each
	// direction (default DefaultByteRate, burst a quarter second).
	ByteRate float64
	// IPByteRate bounds the payload bytes per second that all tunnels of
	// one client IPv4 address or IPv6 /64 send out together (default
	// DefaultIPByteRate, burst a quarter second).
	IPByteRate float64
	// MaxDestinations bounds the distinct destinations (address and
	// port) a tunnel sent to within DestinationTTL (default
	// DefaultMaxDestinations).
	MaxDestinations int
	// DestinationTTL is how long a destination the tunnel stopped
	// sending to keeps its place (default DefaultDestinationTTL).
	DestinationTTL time.Duration
	// ProbeRate and ProbeBurst bound the datagrams per second a tunnel
	// sends to one address that has not answered it within DestinationTTL (sent to its presence
	// from a destination it sent to within DestinationTTL; an unsolicited
	// datagram does not count), all its ports together: enough to register, bind and punch, too
	// little to flood a third party (default DefaultProbeRate,
	// DefaultProbeBurst).
	ProbeRate  float64
	ProbeBurst float64
	// UnsolicitedRate and UnsolicitedBurst bound the datagrams per second
	// a tunnel carries to its client from sources it has not sent to
	// within DestinationTTL (address and port): a peer's first punching
	// probes, a new peer's first packets, and whatever a stranger sends to
	// the presence, which anyone can learn. They have a bucket of their
	// own, apart from Rate and ByteRate, which only datagrams from the
	// tunnel's destinations spend, so that a flood at the presence cannot
	// silence the answers of the servers and peers the client talks to
	// (default DefaultUnsolicitedRate, DefaultUnsolicitedBurst).
	UnsolicitedRate  float64
	UnsolicitedBurst int
	// ClockSkew is how far a hello's clock may be from ours (default 2 min).
	ClockSkew time.Duration

	// ListenUDP opens a presence socket (default net.ListenUDP; tests
	// open it inside a network namespace).
	ListenUDP func(laddr netip.AddrPort) (*net.UDPConn, error)
	// Logger defaults to discarding; Registerer, when set, gets the metrics.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now defaults to time.Now.
	Now func() time.Time

	// sweepEvery is how often the idle sweep runs while tunnels are open
	// (default a quarter of IdleTimeout, at most 15 s).
	sweepEvery time.Duration
}

func (c *Config) validate() error {
	if !c.PresenceIP.IsValid() {
		return errors.New("stream relay: PresenceIP is required (the address tunnels' UDP sockets bind to)")
	}
	if !c.AdvertiseIP.IsValid() {
		if c.PresenceIP.IsUnspecified() {
			return fmt.Errorf("stream relay: PresenceIP %v is unspecified: give AdvertiseIP, the public address tunnels are reached at", c.PresenceIP)
		}
		c.AdvertiseIP = c.PresenceIP
	}
	if c.AdvertiseIP.IsUnspecified() {
		return fmt.Errorf("stream relay: AdvertiseIP %v is unspecified: give the public address tunnels are reached at", c.AdvertiseIP)
	}
	c.PresenceIP, c.AdvertiseIP = c.PresenceIP.Unmap(), c.AdvertiseIP.Unmap()
	if c.OwnAddrs == nil {
		own, err := addrpolicy.LocalAddrs()
		if err != nil {
			return fmt.Errorf("stream relay: %w", err)
		}
		c.OwnAddrs = own
	}
	c.OwnAddrs = append(c.OwnAddrs[:len(c.OwnAddrs):len(c.OwnAddrs)], c.PresenceIP, c.AdvertiseIP)
	defInt(&c.MaxTunnels, DefaultMaxTunnels)
	defInt(&c.MaxTunnelsPerIP, DefaultMaxTunnelsPerIP)
	defInt(&c.MaxTunnelsPerNet, DefaultMaxTunnelsPerNet)
	defInt(&c.MaxDestinations, DefaultMaxDestinations)
	defInt(&c.Burst, DefaultBurst)
	defFloat(&c.OpenRate, DefaultOpenRate)
	defFloat(&c.OpenBurst, DefaultOpenBurst)
	defFloat(&c.Rate, DefaultRate)
	defFloat(&c.ByteRate, DefaultByteRate)
	defFloat(&c.IPByteRate, DefaultIPByteRate)
	defFloat(&c.ProbeRate, DefaultProbeRate)
	defFloat(&c.ProbeBurst, DefaultProbeBurst)
	defFloat(&c.UnsolicitedRate, DefaultUnsolicitedRate)
	defInt(&c.UnsolicitedBurst, DefaultUnsolicitedBurst)
	defFloat(&c.ServerRate, DefaultServerRate)
	defFloat(&c.ServerBurst, DefaultServerBurst)
	defDur(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	defDur(&c.IdleTimeout, DefaultIdleTimeout)
	defDur(&c.WriteTimeout, DefaultWriteTimeout)
	defDur(&c.DestinationTTL, DefaultDestinationTTL)
	defDur(&c.ClockSkew, 2*time.Minute)
	defDur(&c.sweepEvery, min(c.IdleTimeout/4, 15*time.Second))
	if c.ListenUDP == nil {
		c.ListenUDP = func(laddr netip.AddrPort) (*net.UDPConn, error) {
			return net.ListenUDP("udp", net.UDPAddrFromAddrPort(laddr))
		}
	}
	if c.Logger == nil {
		c.Logger = obs.Discard()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

func defInt(v *int, d int) {
	if *v <= 0 {
		*v = d
	}
}

func defFloat(v *float64, d float64) {
	if *v <= 0 {
		*v = d
	}
}

func defDur(v *time.Duration, d time.Duration) {
	if *v <= 0 {
		*v = d
	}
}

// byteBurst is the burst of a bytes-per-second bucket: a quarter second,
// and never less than one largest datagram.
func byteBurst(rate float64) float64 { return max(rate/4, 4*streamclient.MaxPayload) }
