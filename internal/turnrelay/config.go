// Package turnrelay is the relay's TURN server (RFC 8656) for standard
// WebRTC/ICE clients. It wraps pion/turn with what the relay needs:
// time-limited credentials from a shared secret in the "TURN REST API"
// convention (crypto.TURNCredentials, the auth handler), a quota of live allocations
// per user and a cap on all of them, Prometheus metrics, and one server over
// several SO_REUSEPORT sockets so that a single reader goroutine per port is
// not the ceiling.
//
// It is meant for a public address, so it is not an open proxy and not a
// reflector: peers that package addrpolicy refuses (loopback, private,
// CGNAT, link-local with the metadata service, multicast, the relay's own
// addresses) are refused with 403 unless the operator allows their range;
// Allocates are rate-limited per source; and before a client is
// authenticated no answer is larger than its request, except Binding
// answers and 401/438 challenges within per-source rates, and a request
// whose MESSAGE-INTEGRITY does not verify is dropped unanswered before pion
// (guardConn).
//
// Relaying is pion's, with one shortcut for the bulk of the traffic: the
// server's UDP sockets are read in batches (recvmmsg), and ChannelData for
// a channel pion has bound, either way, is relayed by the reader from a
// table mirrored from pion's channel events, without a pass through pion
// (fastpath.go). What the table does not hold goes to pion unchanged.
//
// The server does not listen by itself: the caller opens the UDP sockets and
// TCP listeners (see package sockopt) and hands them over in Config.
package turnrelay

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/addrpolicy"
)

// Defaults and limits of Config.
const (
	// DefaultRealm is the realm when Config.Realm is empty.
	DefaultRealm = "keymesh"
	// DefaultMaxAllocationsPerUser is the quota when
	// Config.MaxAllocationsPerUser is zero. A browser needs one or two
	// allocations per peer connection.
	DefaultMaxAllocationsPerUser = 10
	// DefaultSocketBuffer is the receive and send buffer size given to
	// each PacketConn, as coturn gives its listening sockets: room for
	// bursts of about 1500 full-size datagrams.
	DefaultSocketBuffer = 2 << 20
	// DefaultWritersPerSocket is the number of duplicate descriptors each
	// UDP socket is written through (see WritersPerSocket).
	DefaultWritersPerSocket = 4
	// MinSecretLen is the shortest shared secret accepted, in bytes.
	MinSecretLen = 16
	// maxRealmLen is the STUN REALM limit (RFC 8489 section 14.9).
	maxRealmLen = 763

	// DefaultMaxAllocations is the server-wide cap on live allocations
	// when Config.MaxAllocations is zero. Each holds a socket (a file
	// descriptor) and a few KiB.
	DefaultMaxAllocations = 20000
	// DefaultAllocationRate and DefaultAllocationBurst bound the
	// authenticated Allocate requests one source (IPv4 address or IPv6
	// /64) may make: per second, and at once.
	DefaultAllocationRate  = 2
	DefaultAllocationBurst = 20
	// DefaultBindingRate and DefaultBindingBurst bound the STUN Binding
	// requests answered per source.
	DefaultBindingRate  = 10
	DefaultBindingBurst = 20
	// DefaultChallengeRate and DefaultChallengeBurst bound the 401/438
	// challenges per source that are larger than the request they answer.
	DefaultChallengeRate  = 4
	DefaultChallengeBurst = 16
	// DefaultIntegrityRate and DefaultIntegrityBurst bound the
	// MESSAGE-INTEGRITY checks the guard makes, per second and at once,
	// for requests from sources (address and port) that did not pass one
	// within verifiedTTL. One check (a REST password, a key and an
	// HMAC-SHA1) takes about 2.5 µs on an EPYC core
	// (BenchmarkCheckIntegrity), so the default bounds them to about a
	// quarter of a core.
	DefaultIntegrityRate  = 100_000
	DefaultIntegrityBurst = 10_000
	// verifiedTTL is how long a source whose request's integrity verified
	// is checked without the global budget: an allocation's default
	// lifetime, which its client's Refreshes renew.
	verifiedTTL = 10 * time.Minute
	// maxVerifiedSources bounds that table of sources.
	maxVerifiedSources = 1 << 16
	// DefaultMaxTCPConnsPerSource and DefaultMaxTCPConns bound the open
	// TCP connections to the Listeners, per source (IPv4 address or IPv6
	// /64) and in all; each costs pion a goroutine and a buffer for as
	// long as the client keeps it open.
	DefaultMaxTCPConnsPerSource = 64
	DefaultMaxTCPConns          = 20000
	// DefaultMaxTCPConnsPerNet bounds them per IPv4 /24 or IPv6 /48
	// (ratelimit.Net): an IPv6 client holds 65,536 /64s in one /48.
	DefaultMaxTCPConnsPerNet = 512
	// DefaultMaxPeerConns bounds the open peer connections of one RFC 6062
	// TCP allocation that its peers opened to it (pion keeps one it was
	// not asked to bind for 30 s).
	DefaultMaxPeerConns = 64
)

// Config configures a Server. The zero value of each optional field means
// its documented default.
type Config struct {
	// PacketConns are the UDP sockets clients send to, typically a group
	// bound to one address with SO_REUSEPORT (sockopt.ListenUDPGroup); each
	// is read by its own goroutine. The server owns them: Close closes them.
	PacketConns []net.PacketConn
	// Listeners are TCP listeners for clients that cannot use UDP (TURN over
	// TCP, RFC 8656 section 3.1). Owned by the server too. At least one
	// PacketConn or Listener is required.
	Listeners []net.Listener

	// Realm is the STUN realm. Default DefaultRealm.
	Realm string
	// Secret is the TURN REST API shared secret (coturn's
	// static-auth-secret) that crypto.TURNCredentials signs with. Required, at least
	// MinSecretLen bytes.
	Secret []byte
	// RelayIP is the address allocations' sockets are bound to: the
	// public address, a private one the public address is forwarded to
	// (a cloud instance's), or the unspecified address. Default: the IP of
	// the first socket.
	RelayIP netip.Addr
	// AdvertiseIP is the address put in XOR-RELAYED-ADDRESS, the one peers
	// send to. Default RelayIP; required when RelayIP is unspecified.
	AdvertiseIP netip.Addr

	// AllowDestinations are the peer ranges allowed although
	// addrpolicy refuses them (loopback, private, CGNAT, link-local,
	// multicast, the server's own addresses): CreatePermission,
	// ChannelBind and Connect for any other refused peer get 403.
	AllowDestinations []netip.Prefix
	// OwnAddrs are the server's own addresses, refused as peers unless
	// allowed. Default: the host's interface addresses
	// (addrpolicy.LocalAddrs); RelayIP and AdvertiseIP are always added.
	OwnAddrs []netip.Addr

	// MaxAllocations caps the live allocations of the whole server; the
	// one beyond it gets 508 Insufficient Capacity. Zero means
	// DefaultMaxAllocations; negative means no cap.
	MaxAllocations int
	// AllocationRate and AllocationBurst bound the authenticated Allocate
	// requests per source (IPv4 address or IPv6 /64); one beyond gets 486.
	// Zero means the default; a negative rate means no limit.
	AllocationRate, AllocationBurst float64
	// BindingRate and BindingBurst bound the STUN Binding requests
	// answered per source; the rest are dropped. Zero means the default; a
	// negative rate means no limit.
	BindingRate, BindingBurst float64
	// ChallengeRate and ChallengeBurst bound, per source, the 401 and 438
	// challenges larger than the request they answer; the rest are
	// dropped. Zero means the default; a negative rate means no limit.
	ChallengeRate, ChallengeBurst float64
	// IntegrityRate and IntegrityBurst bound, for the whole server, the
	// MESSAGE-INTEGRITY checks the guard makes before pion for requests
	// from sources (address and port) none of whose requests verified
	// in the last 10 minutes; a request beyond them, and one that fails
	// its check, is dropped unanswered. Zero means the default; a
	// negative rate means no limit.
	IntegrityRate, IntegrityBurst float64

	// MaxTCPConnsPerSource and MaxTCPConns cap the open TCP connections to
	// the Listeners of one source (IPv4 address or IPv6 /64) and of the
	// whole server; a connection beyond either is closed on accept. Zero
	// means DefaultMaxTCPConnsPerSource and DefaultMaxTCPConns; negative
	// means no cap.
	MaxTCPConnsPerSource, MaxTCPConns int
	// MaxTCPConnsPerNet caps them per IPv4 /24 or IPv6 /48
	// (ratelimit.Net). Zero means DefaultMaxTCPConnsPerNet; negative means
	// no cap.
	MaxTCPConnsPerNet int
	// MaxPeerConns caps the open connections that peers opened to one RFC
	// 6062 TCP allocation; one beyond is closed on accept. Zero means
	// DefaultMaxPeerConns; negative means no cap.
	MaxPeerConns int

	// MaxAllocationsPerUser caps the live allocations of one REST user (the
	// part of the username after ':'); the allocation beyond it is refused
	// with 486 Allocation Quota Reached. Zero means
	// DefaultMaxAllocationsPerUser; negative means no limit.
	MaxAllocationsPerUser int

	// SocketBuffer is the kernel receive and send buffer, in bytes, set
	// on each PacketConn that exposes its file descriptor (see
	// sockopt.SetBuffers). Zero means DefaultSocketBuffer; negative leaves
	// the sockets as they are.
	SocketBuffer int
	// WritersPerSocket is how many duplicates of each *net.UDPConn in
	// PacketConns the server writes through, so that the allocations
	// relaying to clients and the reader answering requests do not queue
	// on one descriptor's write lock. Zero means DefaultWritersPerSocket;
	// negative writes through the socket itself.
	WritersPerSocket int

	// Logger receives the server's and pion's logs. Default: discard.
	Logger *slog.Logger
	// Registerer registers the server's metrics. Default: none (metrics are
	// kept but not exported).
	Registerer prometheus.Registerer
	// Now is the clock that credential expiry is checked against.
	// Default time.Now.
	Now func() time.Time

	// channelLifetime is pion's ChannelBindTimeout (0: pion's 10
	// minutes); tests shorten it to see a binding expire.
	channelLifetime time.Duration
}

// withDefaults returns a copy of c with every unset optional field filled.
func (c Config) withDefaults() Config {
	if c.Realm == "" {
		c.Realm = DefaultRealm
	}
	if !c.RelayIP.IsValid() {
		c.RelayIP = firstSocketIP(c)
	}
	c.RelayIP = c.RelayIP.Unmap()
	if !c.AdvertiseIP.IsValid() {
		c.AdvertiseIP = c.RelayIP
	}
	c.AdvertiseIP = c.AdvertiseIP.Unmap()
	if c.OwnAddrs == nil {
		c.OwnAddrs, _ = addrpolicy.LocalAddrs()
	}
	c.MaxAllocations = cmp.Or(c.MaxAllocations, DefaultMaxAllocations)
	c.AllocationRate, c.AllocationBurst = rateDefaults(c.AllocationRate, c.AllocationBurst, DefaultAllocationRate, DefaultAllocationBurst)
	c.BindingRate, c.BindingBurst = rateDefaults(c.BindingRate, c.BindingBurst, DefaultBindingRate, DefaultBindingBurst)
	c.ChallengeRate, c.ChallengeBurst = rateDefaults(c.ChallengeRate, c.ChallengeBurst, DefaultChallengeRate, DefaultChallengeBurst)
	c.IntegrityRate = cmp.Or(c.IntegrityRate, DefaultIntegrityRate)
	if c.IntegrityBurst <= 0 {
		c.IntegrityBurst = DefaultIntegrityBurst
	}
	c.MaxTCPConnsPerSource = cmp.Or(c.MaxTCPConnsPerSource, DefaultMaxTCPConnsPerSource)
	c.MaxTCPConns = cmp.Or(c.MaxTCPConns, DefaultMaxTCPConns)
	c.MaxTCPConnsPerNet = cmp.Or(c.MaxTCPConnsPerNet, DefaultMaxTCPConnsPerNet)
	c.MaxPeerConns = cmp.Or(c.MaxPeerConns, DefaultMaxPeerConns)
	c.MaxAllocationsPerUser = cmp.Or(c.MaxAllocationsPerUser, DefaultMaxAllocationsPerUser)
	c.SocketBuffer = cmp.Or(c.SocketBuffer, DefaultSocketBuffer)
	c.WritersPerSocket = cmp.Or(c.WritersPerSocket, DefaultWritersPerSocket)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// rateDefaults fills a zero rate and burst; the burst is at least the rate.
func rateDefaults(rate, burst, defRate, defBurst float64) (float64, float64) {
	rate = cmp.Or(rate, defRate)
	if burst <= 0 {
		burst = defBurst
	}
	return rate, max(burst, rate)
}

// firstSocketIP returns the local IP of the first socket, or the zero Addr.
func firstSocketIP(c Config) netip.Addr {
	var a net.Addr
	switch {
	case len(c.PacketConns) > 0 && c.PacketConns[0] != nil:
		a = c.PacketConns[0].LocalAddr()
	case len(c.Listeners) > 0 && c.Listeners[0] != nil:
		a = c.Listeners[0].Addr()
	default:
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// validate checks a Config after withDefaults.
func (c Config) validate() error {
	if len(c.PacketConns) == 0 && len(c.Listeners) == 0 {
		return ErrNoSockets
	}
	for i, pc := range c.PacketConns {
		if pc == nil {
			return fmt.Errorf("%w: PacketConns[%d] is nil", ErrNoSockets, i)
		}
	}
	for i, ln := range c.Listeners {
		if ln == nil {
			return fmt.Errorf("%w: Listeners[%d] is nil", ErrNoSockets, i)
		}
	}
	if len(c.Secret) < MinSecretLen {
		return fmt.Errorf("%w: %d bytes, need at least %d (e.g. `head -c 32 /dev/urandom | base64`)",
			ErrSecret, len(c.Secret), MinSecretLen)
	}
	if len(c.Realm) > maxRealmLen {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrRealm, len(c.Realm), maxRealmLen)
	}
	if !c.RelayIP.IsValid() {
		return fmt.Errorf("%w: no socket address to bind allocations to; set the relay IP", ErrRelayIP)
	}
	if !c.AdvertiseIP.IsValid() || c.AdvertiseIP.IsUnspecified() {
		return fmt.Errorf("%w: allocations bind to a wildcard address, so set the advertised IP to the public address peers reach", ErrRelayIP)
	}
	if c.RelayIP.Is4() != c.AdvertiseIP.Is4() {
		return fmt.Errorf("%w: relay IP %s and advertised IP %s are of different families", ErrRelayIP, c.RelayIP, c.AdvertiseIP)
	}
	for _, a := range []netip.Addr{c.RelayIP, c.AdvertiseIP} {
		if a.Zone() != "" {
			return fmt.Errorf("%w: %s has a zone; use a global address", ErrRelayIP, a)
		}
	}
	return nil
}
