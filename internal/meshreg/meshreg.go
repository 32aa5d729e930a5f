package meshreg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keymesh/keymesh/internal/mesh"
)

// Defaults and bounds of Config.
const (
	// DefaultPrefix starts every key.
	DefaultPrefix = "keymesh:mesh:"
	// DefaultMax is how many instance numbers a group has by default.
	DefaultMax = 64
	// MaxMax bounds Config.Max: the members read in one round.
	MaxMax = 1024
	// DefaultTTL is how long a claim lives in Redis unless refreshed.
	DefaultTTL = 15 * time.Second
	// DefaultInterval is how often an instance refreshes its claim and
	// reads the group: a newcomer is known to every member (its
	// heartbeats accepted) within about one interval.
	DefaultInterval = time.Second
	// MinTTL bounds Config.TTL from below.
	MinTTL = time.Second
	// maxValue bounds a member's value: an IPv6 address and port, a
	// space and a token fit well within it.
	maxValue = 128
)

// ErrConfig: an invalid Config.
var ErrConfig = errors.New("meshreg: invalid config")

// Config configures a Member.
type Config struct {
	// Client reaches the shared Redis (see discovery.ParseRedisURL).
	// Required.
	Client redis.UniversalClient
	// Group names the instances that number themselves together, e.g.
	// "relay". Required: letters, digits, '-' and '_'.
	Group string
	// Prefix starts every key. Default DefaultPrefix.
	Prefix string
	// Addr is this instance's advertised mesh address (mesh.Node.Self).
	// Required.
	Addr netip.AddrPort
	// Max is how many numbers the group has (1 to Max), all read each
	// round. Default DefaultMax, at most MaxMax.
	Max int
	// TTL is how long a claim lives in Redis unless refreshed. Default
	// DefaultTTL.
	TTL time.Duration
	// Interval is how often Run refreshes the claim and reads the group.
	// Default DefaultInterval, at most TTL/4.
	Interval time.Duration
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Now is the clock of the local lease. Default time.Now.
	Now func() time.Time
}

// View is the group as one round saw it.
type View struct {
	// Self is this instance's number; 0 while it holds no claim.
	Self uint16
	// Peers are the other members by number (never this instance's own
	// address).
	Peers mesh.Peers
}

// Addrs returns the peers' addresses, in number order.
func (v View) Addrs() []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(v.Peers))
	for n := 1; n <= 65535 && len(out) < len(v.Peers); n++ {
		if a, ok := v.Peers[uint16(n)]; ok {
			out = append(out, a)
		}
	}
	return out
}

// Member is one instance's claim in its group and its view of the others.
// Step and Run must not be called concurrently.
type Member struct {
	cfg   Config
	log   *slog.Logger
	value string // "<addr> <token>"
	keys  []string

	self       uint16
	last       uint16    // the number held last, claimed again first
	leaseUntil time.Time // the claim is used until then
	mu         sync.Mutex
	view       View
}

// refreshScript extends the claim when it is still this process's.
var refreshScript = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`)

// releaseScript deletes the claim when it is still this process's.
var releaseScript = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)

// New checks cfg and returns a member holding no claim yet.
func New(cfg Config) (*Member, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("%w: Client is required", ErrConfig)
	}
	if cfg.Group == "" || strings.IndexFunc(cfg.Group, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}) >= 0 {
		return nil, fmt.Errorf("%w: group %q: want letters, digits, - and _", ErrConfig, cfg.Group)
	}
	if !cfg.Addr.IsValid() || cfg.Addr.Addr().IsUnspecified() || cfg.Addr.Port() == 0 {
		return nil, fmt.Errorf("%w: Addr %v is not a specific ip:port", ErrConfig, cfg.Addr)
	}
	cfg.Addr = netip.AddrPortFrom(cfg.Addr.Addr().Unmap(), cfg.Addr.Port())
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Max == 0 {
		cfg.Max = DefaultMax
	}
	if cfg.Max < 1 || cfg.Max > MaxMax {
		return nil, fmt.Errorf("%w: Max %d is not within 1..%d", ErrConfig, cfg.Max, MaxMax)
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < MinTTL {
		return nil, fmt.Errorf("%w: TTL %v is below %v", ErrConfig, cfg.TTL, MinTTL)
	}
	if cfg.Interval == 0 {
		cfg.Interval = min(DefaultInterval, cfg.TTL/4)
	}
	if cfg.Interval < 0 || cfg.Interval > cfg.TTL/4 {
		return nil, fmt.Errorf("%w: Interval %v is not within 0..TTL/4 (%v)", ErrConfig, cfg.Interval, cfg.TTL/4)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var tok [16]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return nil, fmt.Errorf("meshreg token: %w", err)
	}
	m := &Member{cfg: cfg, log: cfg.Logger, value: cfg.Addr.String() + " " + hex.EncodeToString(tok[:])}
	for n := 1; n <= cfg.Max; n++ {
		m.keys = append(m.keys, m.key(uint16(n)))
	}
	return m, nil
}

// key is number n's key; the {group} hash tag keeps a group in one slot.
func (m *Member) key(n uint16) string {
	return m.cfg.Prefix + "{" + m.cfg.Group + "}:" + strconv.Itoa(int(n))
}

// Interval is how often Run steps (Config.Interval).
func (m *Member) Interval() time.Duration { return m.cfg.Interval }

// lease is how long a claim is used after the command that set or
// extended it was sent: Redis keeps it TTL from when it ran, later.
func (m *Member) lease() time.Duration { return m.cfg.TTL * 3 / 4 }

// View returns the last round's view.
func (m *Member) View() View {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.view
}

// Step runs one round: it keeps or claims this instance's number and
// reads the group. On a Redis error the number is kept while its local
// lease lasts and the peers are those of the last round that read them.
func (m *Member) Step(ctx context.Context) (View, error) {
	var errs []error
	if m.self != 0 {
		start := m.cfg.Now()
		ok, err := refreshScript.Run(ctx, m.cfg.Client, []string{m.key(m.self)}, m.value, m.cfg.TTL.Milliseconds()).Int()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("meshreg refresh: %w", err))
			if !m.cfg.Now().Before(m.leaseUntil) {
				m.log.Warn("mesh: instance number given up: its claim could not be refreshed within its lease", "instance", m.self, "err", err)
				m.self = 0
			}
		case ok == 0:
			m.log.Warn("mesh: instance number claim lost; claiming again", "instance", m.self)
			m.self = 0
		default:
			m.leaseUntil = start.Add(m.lease())
		}
	}
	vals, err := m.read(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	if m.self == 0 && err == nil {
		if err := m.claim(ctx, vals); err != nil {
			errs = append(errs, err)
		}
	}
	m.mu.Lock()
	m.view.Self = m.self
	if err == nil {
		m.view.Peers = m.peers(vals)
	}
	v := m.view
	m.mu.Unlock()
	return v, errors.Join(errs...)
}

// read returns the group's values, "" where a number is free.
func (m *Member) read(ctx context.Context) ([]string, error) {
	res, err := m.cfg.Client.MGet(ctx, m.keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("meshreg read: %w", err)
	}
	vals := make([]string, len(m.keys))
	for i, r := range res {
		if s, ok := r.(string); ok {
			vals[i] = s
		}
	}
	return vals, nil
}

// claim takes a free number: the one held last when free, else the lowest.
// vals is the group as just read; SET NX settles races with other
// instances claiming at the same moment.
func (m *Member) claim(ctx context.Context, vals []string) error {
	try := make([]uint16, 0, len(vals))
	if m.last != 0 && int(m.last) <= len(vals) && vals[m.last-1] == "" {
		try = append(try, m.last)
	}
	for i, v := range vals {
		if v == "" && uint16(i+1) != m.last {
			try = append(try, uint16(i+1))
		}
	}
	for _, n := range try {
		start := m.cfg.Now()
		ok, err := m.cfg.Client.SetNX(ctx, m.key(n), m.value, m.cfg.TTL).Result()
		if err != nil {
			return fmt.Errorf("meshreg claim: %w", err)
		}
		if ok {
			m.self, m.last, m.leaseUntil = n, n, start.Add(m.lease())
			vals[n-1] = m.value
			m.log.Info("mesh: instance number claimed", "group", m.cfg.Group, "instance", n, "addr", m.cfg.Addr)
			return nil
		}
	}
	return fmt.Errorf("meshreg claim: all %d numbers of group %q are taken", len(vals), m.cfg.Group)
}

// peers parses the other members' values; invalid ones are skipped.
func (m *Member) peers(vals []string) mesh.Peers {
	p := mesh.Peers{}
	for i, v := range vals {
		if v == "" || v == m.value {
			continue
		}
		a, ok := ParseValue(v)
		if !ok || a == m.cfg.Addr || !Acceptable(a, m.cfg.Addr) {
			continue
		}
		p[uint16(i+1)] = a
	}
	return p
}

// ParseValue reads a member's value, "<ip:port> <token>".
func ParseValue(v string) (netip.AddrPort, bool) {
	if len(v) > maxValue {
		return netip.AddrPort{}, false
	}
	addr, tok, ok := strings.Cut(v, " ")
	if !ok || len(tok) != 32 {
		return netip.AddrPort{}, false
	}
	if _, err := hex.DecodeString(tok); err != nil {
		return netip.AddrPort{}, false
	}
	a, err := netip.ParseAddrPort(addr)
	if err != nil || a.Addr().Zone() != "" {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()), true
}

// Acceptable reports whether a member address may be sent to by an
// instance whose own mesh address is self: a specific unicast ip:port,
// loopback or link-local only when self is too.
func Acceptable(a, self netip.AddrPort) bool {
	ip := a.Addr()
	switch {
	case a.Port() == 0, !ip.IsValid(), ip.IsUnspecified(), ip.IsMulticast(), ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return false
	case ip.IsLoopback() && !self.Addr().IsLoopback():
		return false
	case ip.IsLinkLocalUnicast() && !self.Addr().IsLinkLocalUnicast():
		return false
	}
	return true
}

// Run steps every Interval until ctx ends, calling onChange with each view
// that differs from the one it was called with before (the first round's
// included, unless Join already handed that one over), then releases the
// claim.
func (m *Member) Run(ctx context.Context, onChange func(View)) {
	m.run(ctx, View{}, true, onChange)
}

func (m *Member) run(ctx context.Context, prev View, first bool, onChange func(View)) {
	t := time.NewTicker(m.Interval())
	defer t.Stop()
	for {
		// A round that hangs must not outlive the lease it checks.
		sctx, cancel := context.WithTimeout(ctx, m.Interval())
		v, err := m.Step(sctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			m.log.Warn("mesh membership round failed", "group", m.cfg.Group, "err", err)
		}
		if first || !sameView(prev, v) {
			onChange(v)
			prev, first = v, false
		}
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = m.Release(rctx)
			cancel()
			return
		case <-t.C:
		}
	}
}

// Release deletes this instance's claim (when still its own), so that the
// number is free at once rather than after the TTL.
func (m *Member) Release(ctx context.Context) error {
	if m.self == 0 {
		return nil
	}
	n := m.self
	m.self = 0
	if err := releaseScript.Run(ctx, m.cfg.Client, []string{m.key(n)}, m.value).Err(); err != nil {
		return fmt.Errorf("meshreg release: %w", err)
	}
	return nil
}

func sameView(a, b View) bool {
	if a.Self != b.Self || len(a.Peers) != len(b.Peers) {
		return false
	}
	for n, x := range a.Peers {
		if y, ok := b.Peers[n]; !ok || x != y {
			return false
		}
	}
	return true
}
