package relay

import (
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
	// DefaultBatch is how many datagrams one system call reads or writes.
	DefaultBatch = 64

	// DefaultRate and DefaultBurst limit each source address and port:
	// 20,000 packets/s is about 190 Mbit/s of 1200-byte packets.
	DefaultRate  = 20000
	DefaultBurst = 10000
	// DefaultBindCost is how many tokens a bind takes: a bind costs a
	// signature check and a seal, some fifty times a forward.
	DefaultBindCost = 50
	// DefaultBindsPerSecond caps signature checks over all sources, so a
	// flood of binds from spoofed addresses cannot take every core.
	DefaultBindsPerSecond = 20000
	// DefaultMaxSources bounds the rate limiter's table.
	DefaultMaxSources = 1 << 16
)

// RateLimit limits what one source (address and port) may send. Each source
// has a token bucket of Burst tokens refilled at Rate per second; a forward
// takes one token, a bind BindCost. The table of buckets is bounded by
// MaxSources; when a part of it fills, idle buckets are dropped first, and
// if that is not enough the part is cleared (a cleared source starts again
// with a full bucket).
type RateLimit struct {
	// Disabled turns per-source limiting off.
	Disabled bool
	// Rate is tokens per second. Default DefaultRate.
	Rate float64
	// Burst is the bucket size. Default DefaultBurst.
	Burst float64
	// BindCost is the tokens a bind takes. Default DefaultBindCost.
	BindCost float64
	// BindsPerSecond caps binds over all sources (burst: one second's
	// worth). Default DefaultBindsPerSecond; negative means no cap.
	BindsPerSecond float64
	// MaxSources bounds the table. Default DefaultMaxSources.
	MaxSources int
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
	// DefaultClockSkew.
	ClockSkew time.Duration
	// RateLimit limits each source.
	RateLimit RateLimit
	// Batch is how many datagrams one system call moves. Default
	// DefaultBatch; 1 turns batching off.
	Batch int
	// Logger gets the server's logs. Default: discard.
	Logger *slog.Logger
	// Registerer registers the metrics. Default: kept but not exported.
	Registerer prometheus.Registerer
	// Now is the clock for bind times, ticket expiry and rate limits.
	// Default time.Now.
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
}

func (c Config) withDefaults() Config {
	if c.TicketTTL == 0 {
		c.TicketTTL = DefaultTicketTTL
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = DefaultClockSkew
	}
	if c.Batch == 0 {
		c.Batch = DefaultBatch
	}
	r := &c.RateLimit
	if r.Rate == 0 {
		r.Rate = DefaultRate
	}
	if r.Burst == 0 {
		r.Burst = DefaultBurst
	}
	if r.BindCost == 0 {
		r.BindCost = DefaultBindCost
	}
	if r.BindsPerSecond == 0 {
		r.BindsPerSecond = DefaultBindsPerSecond
	}
	if r.MaxSources == 0 {
		r.MaxSources = DefaultMaxSources
	}
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
	if c.Mesh != nil && c.Instance == 0 {
		return fmt.Errorf("%w: a mesh needs this relay's instance number", ErrConfig)
	}
	r := c.RateLimit
	if !r.Disabled {
		if r.Rate < 0 || r.Burst < 1 || r.BindCost < 0 {
			return fmt.Errorf("%w: rate limit needs rate >= 0, burst >= 1, bind cost >= 0 (got %v, %v, %v)",
				ErrConfig, r.Rate, r.Burst, r.BindCost)
		}
		if r.BindCost > r.Burst {
			return fmt.Errorf("%w: bind cost %v exceeds the burst %v: no bind could pass", ErrConfig, r.BindCost, r.Burst)
		}
		if r.MaxSources < 1 {
			return fmt.Errorf("%w: rate limit table size %d", ErrConfig, r.MaxSources)
		}
	}
	return nil
}
