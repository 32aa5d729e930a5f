package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/replay"
)

// reason is why a datagram was dropped or answered with a refusal; its
// String is the `reason` label of keymesh_rendezvous_rejected_total.
type reason int

const (
	reasonTruncated reason = iota
	reasonBadVersion
	reasonBadBox
	reasonReplay
	reasonStaleTime
	reasonNoCookie
	reasonRateLimited
	reasonMalformed
	reasonUnknownType
	reasonBadToken
	reasonKeyRate
	reasonKeyBudget
	reasonSTUNRate
	reasonRegisterRate
	reasonRegisterNotNewer
	numReasons
)

var reasonNames = [numReasons]string{
	"truncated", "bad_version", "bad_box", "replay", "stale_time",
	"no_cookie", "rate_limited", "malformed", "unknown_type", "bad_token",
	"key_rate_limited", "key_budget", "stun_rate_limited", "register_rate_limited",
	"register_not_newer",
}

func (r reason) String() string { return reasonNames[r] }

// metrics are the server's Prometheus collectors. Counters indexed by label
// are resolved once, so the hot path never formats a label.
type metrics struct {
	packets       prometheus.Counter
	registrations prometheus.Counter
	lookups       prometheus.Counter
	connectsFound prometheus.Counter
	connectsNone  prometheus.Counter
	punches       prometheus.Counter
	stun          prometheus.Counter
	registryErrs  prometheus.Counter
	keyComputes   prometheus.Counter
	cookieReplies prometheus.Counter
	keepalives    prometheus.Counter
	punchLimited  prometheus.Counter
	registryUp    prometheus.Gauge
	rejected      [numReasons]prometheus.Counter
}

const ns = "keymesh_rendezvous_"

func newMetrics(reg prometheus.Registerer, registry interface {
	Len(context.Context) (int, error)
}, rc *replay.Cache) (*metrics, error) {
	var firstErr error
	keep := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	counter := func(name, help string) prometheus.Counter {
		c, err := register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: ns + name, Help: help}))
		keep(err)
		return c
	}
	m := &metrics{
		packets:       counter("packets_total", "Datagrams received."),
		registrations: counter("registrations_total", "Registrations accepted (new and refreshed)."),
		lookups:       counter("lookups_total", "Registry lookups made for connects."),
		punches:       counter("punches_sent_total", "Punch messages sent to connect targets."),
		stun:          counter("stun_answered_total", "STUN Binding requests answered."),
		registryErrs:  counter("registry_errors_total", "Registry operations that failed (store unavailable)."),
		keyComputes:   counter("shared_key_computations_total", "X25519 shared-key computations (key cache misses)."),
		keepalives:    counter("keepalives_total", "Keepalives answered (a peer checking, between registrations, which instance answers it)."),
		cookieReplies: counter("cookie_replies_total", "Unsealed CookieReplies sent to requests without a valid cookie proof (also counted as rejected no_cookie)."),
		punchLimited:  counter("punches_limited_total", "Punches not sent because their target was over its --punch-rate."),
	}
	up, err := register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: ns + "registry_up", Help: "1 while the registry answers, 0 after a call found it unreachable.",
	}))
	keep(err)
	up.Set(1)
	m.registryUp = up
	connects, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: ns + "connects_total", Help: "Connect requests answered, by result (found or not_found; a refused policy counts as not_found).",
	}, []string{"result"}))
	keep(err)
	m.connectsFound = connects.WithLabelValues("found")
	m.connectsNone = connects.WithLabelValues("not_found")
	rejected, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: ns + "rejected_total", Help: "Datagrams dropped or refused, by reason (no_cookie: answered with a CookieReply, or a Challenge when only the cookie inside the box was wrong; key_rate_limited: an uncached sender key over its source's X25519 budget; key_budget: an uncached connect target over the global X25519 budget; stun_rate_limited: a STUN answer over its source's budget, on any socket; register_rate_limited: a registration over its source's budget).",
	}, []string{"reason"}))
	keep(err)
	for r := range numReasons {
		m.rejected[r] = rejected.WithLabelValues(r.String())
	}
	_, err = register(reg, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: ns + "replay_generations_dropped_total", Help: "Replay-cache generations dropped early under pressure (their stamps are refused as stale since).",
	}, func() float64 { return float64(rc.Stats().Raised) }))
	keep(err)
	_, err = register(reg, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: ns + "replay_pairs_forgotten_total", Help: "Replay-cache entries forgotten while recent, when the newest generations alone overflowed the cache.",
	}, func() float64 { return float64(rc.Stats().Overflowed) }))
	keep(err)
	if ev, ok := registry.(interface{ Evicted() uint64 }); ok {
		_, err = register(reg, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: ns + "registry_evicted_total", Help: "Live registrations evicted to keep the registry under its cap (--max-records).",
		}, func() float64 { return float64(ev.Evicted()) }))
		keep(err)
	}
	_, err = register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: ns + "registered_peers", Help: "Live registrations in the registry (approximate).",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n, err := registry.Len(ctx)
		if err != nil {
			return -1
		}
		return float64(n)
	}))
	keep(err)
	return m, firstErr
}

// register registers c on reg, or returns the collector already registered
// under the same description (another Server on the same Registerer).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register metrics: %w", err)
	}
	return c, nil
}
