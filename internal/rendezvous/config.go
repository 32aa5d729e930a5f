package rendezvous

import (
	"cmp"
	"net/netip"

	"fmt"
	"github.com/keymesh/keymesh/internal/netcheck"
	"log/slog"
	"net/url"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/obs"
	"github.com/keymesh/keymesh/internal/ratelimit"
	"github.com/keymesh/keymesh/internal/wire"
)

// Defaults of Config.
const (
	DefaultTTL         = 90 * time.Second
	DefaultRefresh     = 20 * time.Second
	DefaultClockSkew   = 30 * time.Second
	DefaultPunchDelay  = 150 * time.Millisecond
	DefaultTURNTTL     = time.Hour
	DefaultKeyCache    = 1 << 16
	DefaultReplayCache = 1 << 20
	DefaultRate        = 50
	DefaultBurst       = 100
	DefaultRateSources = 1 << 16
	// DefaultKeyMissRate and DefaultKeyMissBurst bound, per source, the
	// X25519s spent on sender keys the key cache does not hold: half the
	// datagram rate, so that the 1,000 peers of a carrier-grade NAT
	// address are all back within 40 s of a restart (the TTL is 90 s).
	DefaultKeyMissRate  = 25
	DefaultKeyMissBurst = 50
	// DefaultKeyMissBudget is how many X25519s for uncached connect
	// targets all Connects together may cost per second (an X25519 and
	// the key conversion take about 50 µs: a fifth of a core).
	DefaultKeyMissBudget = 4000
	// DefaultSTUNRate and DefaultSTUNBurst bound the STUN Binding answers
	// per source, on every socket.
	DefaultSTUNRate  = 10
	DefaultSTUNBurst = 20
	// DefaultRegisterRate and DefaultRegisterBurst bound the registrations
	// of keys new to this instance taken per source (after its cookie):
	// as the key-miss rate, 1,000 peers behind one address in 40 s.
	DefaultRegisterRate  = 25
	DefaultRegisterBurst = 100
	// DefaultPunchRate and DefaultPunchBurst bound the Punches one peer
	// (by key) is sent, from all requesters together.
	DefaultPunchRate    = 20
	DefaultPunchBurst   = 40
	DefaultInstanceName = "rendezvous"
	// DefaultStreamRelayFactor multiplies the per-source limits of a
	// stream relay's presence address (Config.StreamRelaySources), which
	// stands for all its tunnelled peers, on what has not proven a
	// tunnel (CookieReplies), new keys and STUN: each tunnel is held to
	// the stream relay's server rate (5 datagrams per second by default),
	// so the 50/s of DefaultRate becomes 5,000/s, a thousand attacking
	// tunnels' worth. Requests that proved a tunnel's port are limited
	// per tunnel instead (Config.StreamRelaySources).
	DefaultStreamRelayFactor = 100
	// DefaultRegistryTimeout bounds each registry call: about one peer
	// retransmission, so a hung store fails the request instead of
	// holding a reader.
	DefaultRegistryTimeout = time.Second
	// DefaultRemoteWorkers is how many datagrams each socket handles at
	// once with a registry across the network: enough that the registry's
	// round trips (a refresh waits for its batch to be written, a connect
	// for two lookups) overlap, at a few KiB of buffers each.
	DefaultRemoteWorkers = 256
)

// RateLimit is a per-source token bucket. Sources are IPv4 addresses and
// IPv6 /64 prefixes: a NATed network shares one bucket, so size it for many
// peers behind one address (each sends a Register every Refresh, plus its
// Connects).
type RateLimit struct {
	// PerSecond is the sustained rate a source may send, in datagrams per
	// second. Default DefaultRate; negative disables rate limiting.
	PerSecond float64
	// Burst is the bucket depth. Default DefaultBurst.
	Burst int
	// Sources bounds how many sources are tracked at once; beyond it a
	// source whose bucket refilled, else an arbitrary one, is forgotten
	// (its bucket starts full again). Default DefaultRateSources.
	Sources int

	// shared and factor are Config.StreamRelaySources and
	// StreamRelayFactor, set by Config.validate.
	shared []netip.Prefix
	factor float64
}

// fill sets the zero fields to the defaults given.
func (r *RateLimit) fill(rate float64, burst int) {
	r.PerSecond = cmp.Or(r.PerSecond, rate)
	if r.Burst <= 0 {
		r.Burst = burst
	}
	if r.Sources <= 0 {
		r.Sources = DefaultRateSources
	}
}

func (r RateLimit) limiter() *ratelimit.Limiter {
	return ratelimit.New(ratelimit.Config{PerSecond: r.PerSecond, Burst: float64(r.Burst), MaxSources: r.Sources,
		Shared: r.shared, SharedFactor: r.factor})
}

// StreamRelayHosts returns the hosts of stream relay URLs
// (wss://host:port/...) that are IP literals, each as its /32 or /128:
// where those relays' tunnels reach the rendezvous from when the relay
// advertises the address its presences send from.
func StreamRelayHosts(urls []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil {
			continue
		}
		if a, err := netip.ParseAddr(u.Hostname()); err == nil {
			a = a.Unmap().WithZone("")
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}

// Config configures a Server.
type Config struct {
	// Identity is the server's key pair; peers pin its public key.
	// Required.
	Identity *crypto.Identity
	// Registry stores the registrations. Required. Several Servers may
	// share one.
	Registry discovery.Registry
	// Cookies makes and checks address-validation cookies. Required; every
	// instance behind one address must share its secret.
	Cookies *crypto.CookieJar
	// Relays are the relay servers' UDP addresses (host:port) advertised in
	// Registered; StreamRelays their TLS stream URLs.
	Relays, StreamRelays []string
	// TURNSecret, when set, makes Registered carry TURN REST-API
	// credentials valid TURNTTL (default DefaultTURNTTL) for TURNURIs.
	TURNSecret []byte
	TURNURIs   []string
	TURNTTL    time.Duration
	// TTL is how long a registration lives (default DefaultTTL), Refresh
	// how often peers are told to renew it (default DefaultRefresh). Both
	// are whole seconds on the wire, at most 65535.
	TTL, Refresh time.Duration
	// Instance names this instance in Registered and in records. Default
	// DefaultInstanceName.
	Instance string
	// JoinToken, when set, is required in every Register (compared in
	// constant time).
	JoinToken []byte
	// Logger defaults to a discarding logger.
	Logger *slog.Logger
	// Registerer receives the server's metrics; nil keeps them unexported.
	// Several Servers may share one: the second reuses the first's
	// collectors.
	Registerer prometheus.Registerer
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// RateLimit limits each source's Requests once their nonce proved the
	// source's cookie, before any other work; the Requests that did not
	// (their CookieReplies) have buckets of their own with the same rate
	// and burst, so a flood spoofed from a peer's address spends none of
	// the peer's budget.
	RateLimit RateLimit
	// KeyMissRate limits, per source, the X25519s spent on sender keys the
	// key cache does not hold; a request reaches that step only after its
	// nonce proved the source's cookie. Default DefaultKeyMissRate and
	// DefaultKeyMissBurst.
	KeyMissRate RateLimit
	// KeyMissBudget is how many X25519s per second all Connects together
	// may cost for targets whose keys the key cache does not hold (peers
	// registered through other instances), with a burst of one second's
	// worth. Requests never draw on it: their senders' X25519s come after
	// the cookie proof, within KeyMissRate. Default DefaultKeyMissBudget;
	// negative: no global cap.
	KeyMissBudget float64
	// STUNRate limits STUN Binding answers per source (their answers are
	// larger than the smallest requests), on the main socket and, through
	// AllowSTUN, on the RFC 5780 sockets. Default DefaultSTUNRate and
	// DefaultSTUNBurst.
	STUNRate RateLimit
	// StreamRelaySources are the addresses TLS stream relays' tunnels
	// come from (their presence addresses): every tunnelled peer of one
	// relay sends from its one address, each tunnel from a port of its
	// own, so a request that proved the cookie of its address and port
	// pays RateLimit per tunnel (other tunnels, which anyone may open,
	// cannot spend it), while CookieReplies (RateLimit's other bucket),
	// KeyMissRate, STUNRate and RegisterRate give these addresses
	// StreamRelayFactor times their rate and burst; the stream relay holds
	// each tunnel to what one peer needs and bounds the tunnels. Default:
	// the hosts of StreamRelays that are IP literals.
	StreamRelaySources []netip.Prefix
	// StreamRelayFactor defaults to DefaultStreamRelayFactor.
	StreamRelayFactor float64
	// RegisterRate limits registrations per source of keys not in the key
	// cache (new peers; refreshes of peers this instance knows do not
	// count), after the cookie proved the source. Default
	// DefaultRegisterRate and DefaultRegisterBurst.
	RegisterRate RateLimit
	// Reports limits the outcome reports each source may have counted.
	Reports ReportLimit
	// PunchRate limits the Punches each target peer is sent (keyed by its
	// key, Sources targets tracked at once): over it a Connect still gets
	// its ConnectReply, with the target's addresses and relay tickets, but
	// the target is not sent the Punch, so registered keys that Connect to
	// one peer over and over cannot flood it. Default DefaultPunchRate and
	// DefaultPunchBurst; negative PerSecond disables.
	PunchRate RateLimit
	// ClockSkew is how far a message's clock may be from ours. Default
	// DefaultClockSkew.
	ClockSkew time.Duration
	// PunchDelay is how far ahead of now the punch start is set, so that
	// both peers get their message first. Default DefaultPunchDelay.
	PunchDelay time.Duration
	// KeyCache bounds how many peers' shared keys are cached (each miss
	// costs an X25519 scalar multiplication). Default DefaultKeyCache.
	KeyCache int
	// ReplayCache bounds the (sender, nonce) pairs remembered for replay
	// rejection. Only frames with a valid cookie reach it; when full it
	// forgets the oldest stamps and refuses them from then on (see package
	// replay), never fresh frames. Default DefaultReplayCache (about 40 MB
	// at most).
	ReplayCache int
	// RecentPeers bounds the table of peers that registered here lately,
	// told to register again when the registry's epoch changes (about
	// 100 bytes each). Default DefaultRecentPeers; negative: none kept.
	RecentPeers int
	// RegistryTimeout bounds each registry call (each gets a context with
	// this deadline). Default DefaultRegistryTimeout.
	RegistryTimeout time.Duration
	// Netcheck, when set, answers STUN with RFC 5780 behaviour discovery
	// (CHANGE-REQUEST, OTHER-ADDRESS, RESPONSE-ORIGIN) as the socket at
	// NetcheckLocal, the primary address; answers that must leave from
	// another of the server's sockets are sent by the Responder.
	Netcheck      *netcheck.Responder
	NetcheckLocal netip.AddrPort
	// Mesh, when set, reaches the other instances (package mesh), and
	// MeshAddr is this instance's mesh address: registrations record it as
	// the peer's home, and a Punch for a peer homed on another instance is
	// sent through that instance. Without Mesh every Punch leaves from here.
	Mesh     Forwarder
	MeshAddr netip.AddrPort
	// Workers is the number of goroutines reading each served socket.
	// With the in-process Memory registry, whose calls never block, each
	// takes batches of datagrams per system call, and the default is
	// 2 x GOMAXPROCS, at least 4. With a registry across the network
	// (Redis) each takes one datagram at a time, so that one waiting for
	// the registry holds up no other, and the default is
	// DefaultRemoteWorkers.
	Workers int
}

func (c *Config) validate() error {
	if c.Identity == nil {
		return fmt.Errorf("%w: Identity is required", ErrConfig)
	}
	if c.Registry == nil {
		return fmt.Errorf("%w: Registry is required", ErrConfig)
	}
	if c.Cookies == nil {
		return fmt.Errorf("%w: Cookies is required (a CookieJar over a secret shared by all instances)", ErrConfig)
	}
	if c.Mesh != nil && !c.MeshAddr.IsValid() {
		return fmt.Errorf("%w: Mesh needs MeshAddr, this instance's mesh address", ErrConfig)
	}
	c.TTL = cmp.Or(c.TTL, DefaultTTL)
	c.Refresh = cmp.Or(c.Refresh, DefaultRefresh)
	if c.TTL < time.Second || c.TTL > 65535*time.Second {
		return fmt.Errorf("%w: TTL %v: want 1s to 65535s", ErrConfig, c.TTL)
	}
	if c.Refresh < time.Second || c.Refresh >= c.TTL {
		return fmt.Errorf("%w: refresh %v: want at least 1s and below the TTL %v", ErrConfig, c.Refresh, c.TTL)
	}
	c.TURNTTL = cmp.Or(c.TURNTTL, DefaultTURNTTL)
	if c.Instance == "" {
		c.Instance = DefaultInstanceName
	}
	if c.Logger == nil {
		c.Logger = obs.Discard()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ClockSkew <= 0 {
		c.ClockSkew = DefaultClockSkew
	}
	if c.PunchDelay <= 0 {
		c.PunchDelay = DefaultPunchDelay
	}
	if c.KeyCache <= 0 {
		c.KeyCache = DefaultKeyCache
	}
	if c.ReplayCache <= 0 {
		c.ReplayCache = DefaultReplayCache
	}
	c.RecentPeers = cmp.Or(c.RecentPeers, DefaultRecentPeers)
	if c.RegistryTimeout <= 0 {
		c.RegistryTimeout = DefaultRegistryTimeout
	}
	if c.Workers <= 0 {
		c.Workers = max(4, 2*runtime.GOMAXPROCS(0))
		if _, mem := c.Registry.(*discovery.Memory); !mem {
			c.Workers = DefaultRemoteWorkers
		}
	}
	c.Reports.defaults()
	c.RateLimit.fill(DefaultRate, DefaultBurst)
	c.KeyMissRate.fill(DefaultKeyMissRate, DefaultKeyMissBurst)
	c.STUNRate.fill(DefaultSTUNRate, DefaultSTUNBurst)
	c.RegisterRate.fill(DefaultRegisterRate, DefaultRegisterBurst)
	c.PunchRate.fill(DefaultPunchRate, DefaultPunchBurst)
	if c.StreamRelaySources == nil {
		c.StreamRelaySources = StreamRelayHosts(c.StreamRelays)
	}
	if c.StreamRelayFactor <= 0 {
		c.StreamRelayFactor = DefaultStreamRelayFactor
	}
	for _, r := range []*RateLimit{&c.RateLimit, &c.KeyMissRate, &c.STUNRate, &c.RegisterRate} {
		r.shared, r.factor = c.StreamRelaySources, c.StreamRelayFactor
	}
	c.KeyMissBudget = cmp.Or(c.KeyMissBudget, DefaultKeyMissBudget)
	for _, list := range [][]string{c.Relays, c.StreamRelays, c.TURNURIs} {
		if len(list) > wire.MaxCandidates {
			return fmt.Errorf("%w: at most %d relays, stream relays or TURN URIs each", ErrConfig, wire.MaxCandidates)
		}
		for _, s := range list {
			if s == "" || len(s) > wire.MaxString {
				return fmt.Errorf("%w: relay or URI %q: want 1 to %d bytes", ErrConfig, s, wire.MaxString)
			}
		}
	}
	if len(c.Instance) > wire.MaxString {
		return fmt.Errorf("%w: instance name longer than %d bytes", ErrConfig, wire.MaxString)
	}
	// The largest Registered must fit one frame.
	worst := wire.Registered{
		Relays: c.Relays, StreamRelays: c.StreamRelays, TURNURIs: c.TURNURIs, Instance: c.Instance,
		// An 18-digit expiry, ':' and a 52-character peer ID.
		TURNUser: string(make([]byte, 71)), TURNPass: string(make([]byte, 28)),
	}
	if n := len(wire.AppendMessage(nil, wire.Message{Body: &worst})) + wire.SealedOverhead; n > wire.MaxFrame {
		return fmt.Errorf("%w: relays, URIs and instance name make a %d-byte Registered; at most %d fit a frame", ErrConfig, n, wire.MaxFrame)
	}
	return nil
}
