package relay

import (
	"cmp"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/crypto"
)

// Defaults of Config.
const (
	// DefaultTicketTTL is how long a ticket stays valid.
	DefaultTicketTTL = 10 * time.Minute
	// RebindInterval is how often a peer should re-bind: well inside the
	// 30 s a Linux NAT keeps an idle UDP mapping, and renews the ticket long
	// before it expires.
	RebindInterval = 20 * time.Second
	// DefaultClockSkew is how far a bind's clock may be from the relay's.
	DefaultClockSkew = 60 * time.Second
	// DefaultBatch is how many receive slots one system call fills (each a
	// datagram, or under UDP_GRO a run of up to 64 KiB of them).
	DefaultBatch = 64

	// DefaultRate and DefaultBurst limit the RelaySend frames of each
	// source to each destination (each an IPv4 address or an IPv6 /64,
	// never the port), charged once the ticket opened: 200,000 packets/s
	// is about 2.1 Gbit/s of the peers' 1343-byte QUIC packets. The limit
	// shares the relay among sources; it is not what keeps a stranger from
	// aiming the relay (a ticket does that), so it is set above what one
	// relayed session moves: at the former 20,000 it held a session to
	// 27 MB/s, a ninth of a direct one on loopback.
	DefaultRate  = 200000
	DefaultBurst = 10000
	// DefaultBindRate and DefaultBindBurst limit the binds of each source
	// whose address the cookie proved: each costs a signature check. One
	// peer re-binds every RebindInterval, so 100/s serves some 2,000 peers
	// behind one address.
	DefaultBindRate  = 100
	DefaultBindBurst = 200
	// DefaultChallengeRate and DefaultChallengeBurst limit the challenges
	// sent to each source whose address is not proven yet. A challenge is a
	// sixth of the bind it answers, and this bounds the packets spoofed
	// binds can reflect at one address. The limit is keyed by an address
	// nobody proved, so a spoofer can use up a victim's challenges: it is
	// set high enough that doing so takes a steady 200 binds/s (about
	// 0.3 Mbit/s) per victim address, and it only delays first binds (a
	// bound peer needs no challenge: every RelayBound carries the next
	// cookie).
	DefaultChallengeRate  = 200
	DefaultChallengeBurst = 400
	// DefaultBindsPerSecond caps signature checks over all sources (only
	// binds from proven addresses reach one), so binds from many real
	// addresses cannot take every core.
	DefaultBindsPerSecond = 20000
	// DefaultMaxSources bounds each per-source table.
	DefaultMaxSources = 1 << 16
	// DefaultStreamRelayFactor multiplies the per-source limits of a
	// stream relay's presence address (RateLimit.StreamRelays), which
	// stands for all its tunnelled peers: each tunnel is held to the
	// stream relay's server rate, so an attacker needs 100 times the
	// tunnels that would spend one plain source's budget.
	DefaultStreamRelayFactor = 100
)

// RateLimit limits what one source may send, a source being an IPv4 address
// or an IPv6 /64 (package ratelimit), never a port. Each kind of request
// has its own token bucket per source: RelaySend frames (Rate, Burst),
// challenges to unproven binds (ChallengeRate, ChallengeBurst) and binds
// from proven addresses (BindRate, BindBurst); BindsPerSecond caps the
// signature checks of all sources together. Each table of buckets holds at
// most MaxSources sources and forgets the idle ones first when full (a
// forgotten source starts again with a full bucket).
type RateLimit struct {
	// Disabled turns the per-source limits off (BindsPerSecond still
	// applies).
	Disabled bool
	// Rate is RelaySend frames per second per source and destination (the
	// ticket's address), charged only for frames whose ticket opened.
	// Default DefaultRate.
	Rate float64
	// Burst is the RelaySend bucket size. Default DefaultBurst.
	Burst float64
	// BindRate is proven binds per second per source. Default
	// DefaultBindRate.
	BindRate float64
	// BindBurst is the bind bucket size. Default DefaultBindBurst.
	BindBurst float64
	// ChallengeRate is challenges per second per source. Default
	// DefaultChallengeRate.
	ChallengeRate float64
	// ChallengeBurst is the challenge bucket size. Default
	// DefaultChallengeBurst.
	ChallengeBurst float64
	// BindsPerSecond caps signature checks over all sources (burst: one
	// second's worth). Default DefaultBindsPerSecond; negative means no cap.
	BindsPerSecond float64
	// MaxSources bounds each table. Default DefaultMaxSources.
	MaxSources int
	// StreamRelays are the presence addresses of TLS stream relays: every
	// tunnel of one reaches this relay from there, so each per-source
	// limit above gives them StreamRelayFactor times its rate and burst
	// (the stream relay bounds each tunnel's binds itself).
	StreamRelays []netip.Prefix
	// StreamRelayFactor defaults to DefaultStreamRelayFactor.
	StreamRelayFactor float64
}

// Config configures a Server. The zero value of each optional field means
// its documented default.
type Config struct {
	// Keys seal and open tickets; every instance behind one address holds
	// the same keys. Required. Ticket expiry is checked against the keys'
	// own clock (crypto.NewTicketKeys' now).
	Keys *crypto.TicketKeys
	// TicketTTL is the life of a ticket handed out. Default
	// DefaultTicketTTL.
	TicketTTL time.Duration
	// ClockSkew is how far a bind's clock may differ from Now. Default
	// DefaultClockSkew. (A bind's freshness and source rest on the relay's
	// cookie, which lives one to two crypto.CookieWindow; the clock check
	// is a cheap first filter.)
	ClockSkew time.Duration
	// RateLimit limits each source.
	RateLimit RateLimit
	// Batch is how many receive slots one system call fills: datagrams,
	// or where the kernel has UDP_GRO runs of them (a 64 KiB buffer per
	// slot then). Default DefaultBatch; 1 turns batching and offload off.
	Batch int
	// Logger gets the server's logs. Default: discard.
	Logger *slog.Logger
	// Registerer registers the metrics. Default: kept but not exported.
	Registerer prometheus.Registerer
	// Now is the clock for bind times, cookies, ticket expiry and rate
	// limits. Default time.Now.
	Now func() time.Time
	// Instance is this relay's number (1 to 65535) among the relays that
	// share the ticket keys; tickets it seals name it. 0: no number.
	Instance uint16
	// Mesh and MeshPeers (instance number to mesh address), when set, send
	// a packet whose ticket names another known instance through that
	// instance, which holds the destination's flow. Without them every
	// packet is forwarded from here.
	Mesh      MeshSender
	MeshPeers map[uint16]netip.AddrPort
	// Members, when set, replaces Instance and MeshPeers with a number and
	// peers that change at run time (a membership registry, package
	// meshreg): tickets name its Self (none while it is 0), and its
	// Lookup finds the other instances.
	Members MeshMembers
}

func (c Config) withDefaults() Config {
	c.TicketTTL = cmp.Or(c.TicketTTL, DefaultTicketTTL)
	c.ClockSkew = cmp.Or(c.ClockSkew, DefaultClockSkew)
	c.Batch = cmp.Or(c.Batch, DefaultBatch)
	r := &c.RateLimit
	r.Rate = cmp.Or(r.Rate, DefaultRate)
	r.Burst = cmp.Or(r.Burst, DefaultBurst)
	r.BindRate = cmp.Or(r.BindRate, DefaultBindRate)
	r.BindBurst = cmp.Or(r.BindBurst, DefaultBindBurst)
	r.ChallengeRate = cmp.Or(r.ChallengeRate, DefaultChallengeRate)
	r.ChallengeBurst = cmp.Or(r.ChallengeBurst, DefaultChallengeBurst)
	r.BindsPerSecond = cmp.Or(r.BindsPerSecond, DefaultBindsPerSecond)
	if r.StreamRelayFactor <= 0 {
		r.StreamRelayFactor = DefaultStreamRelayFactor
	}
	r.MaxSources = cmp.Or(r.MaxSources, DefaultMaxSources)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c Config) validate() error {
	if c.Keys == nil {
		return fmt.Errorf("%w: no ticket keys", ErrConfig)
	}
	if c.TicketTTL < time.Second {
		return fmt.Errorf("%w: ticket TTL %v is below 1s", ErrConfig, c.TicketTTL)
	}
	if c.ClockSkew < 0 {
		return fmt.Errorf("%w: negative clock skew %v", ErrConfig, c.ClockSkew)
	}
	if c.Batch < 1 || c.Batch > 1024 {
		return fmt.Errorf("%w: batch %d is not within 1..1024", ErrConfig, c.Batch)
	}
	if c.Mesh != nil && c.Instance == 0 && c.Members == nil {
		return fmt.Errorf("%w: a mesh needs this relay's instance number", ErrConfig)
	}
	r := c.RateLimit
	if !r.Disabled {
		for _, l := range []struct {
			name        string
			rate, burst float64
		}{
			{"relay-send", r.Rate, r.Burst},
			{"bind", r.BindRate, r.BindBurst},
			{"challenge", r.ChallengeRate, r.ChallengeBurst},
		} {
			if l.rate < 0 || l.burst < 1 {
				return fmt.Errorf("%w: %s rate limit needs rate >= 0 and burst >= 1 (got %v, %v)", ErrConfig, l.name, l.rate, l.burst)
			}
		}
		if r.MaxSources < 1 {
			return fmt.Errorf("%w: rate limit table size %d", ErrConfig, r.MaxSources)
		}
	}
	return nil
}
