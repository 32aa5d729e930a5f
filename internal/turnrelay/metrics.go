package turnrelay

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons an authentication fails, the "reason" label of
// keymesh_turn_auth_failures_total.
const (
	reasonMalformed = "malformed" // username not <unix-expiry>:<user>
	reasonExpired   = "expired"   // expiry in the past
	reasonRealm     = "realm"     // realm other than the server's
	reasonIntegrity = "integrity" // MESSAGE-INTEGRITY did not verify: wrong password
	// reasonNoUsername (integrity.go): MESSAGE-INTEGRITY without USERNAME or REALM.
)

// Reasons the guard drops a datagram, the "reason" label of
// keymesh_turn_dropped_total.
const (
	dropBinding   = "binding"   // Binding request over its source's rate
	dropChallenge = "challenge" // 401/438 larger than its request, over its source's rate
	dropOversize  = "oversize"  // other unauthenticated answer larger than its request
	// dropIntegrity (integrity.go): no integrity check left in the budget.
)

// metrics are the server's Prometheus collectors.
type metrics struct {
	allocationsActive prometheus.Gauge
	allocationsTotal  prometheus.Counter
	authFailures      *prometheus.CounterVec
	quotaRefusals     prometheus.Counter
	requestErrors     prometheus.Counter
	capacityRefusals  prometheus.Counter
	rateRefusals      prometheus.Counter
	peerRefusals      prometheus.Counter
	dropped           *prometheus.CounterVec
	// droppedIntegrity and guardAuthFailures (by reason) are children of
	// dropped and authFailures that the guard counts per datagram, looked
	// up once.
	droppedIntegrity  prometheus.Counter
	guardAuthFailures map[string]prometheus.Counter
	tcpRefusals       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		allocationsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keymesh_turn_allocations_active",
			Help: "TURN allocations currently live.",
		}),
		allocationsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keymesh_turn_allocations_total",
			Help: "TURN allocations created.",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keymesh_turn_auth_failures_total",
			Help: "TURN requests refused for their credentials, by reason (malformed, expired, realm, integrity, no-username); those the guard finds before pion are dropped unanswered.",
		}, []string{"reason"}),
		quotaRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keymesh_turn_quota_refusals_total",
			Help: "TURN allocations refused because the user held its maximum (486 Allocation Quota Reached).",
		}),
		requestErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keymesh_turn_request_errors_total",
			Help: "TURN requests and packets that failed (refused credentials, bad requests, relay sockets that could not be opened, ...).",
		}),
		capacityRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keymesh_turn_capacity_refusals_total",
			Help: "TURN allocations refused because the server held its maximum (508 Insufficient Capacity).",
		}),
		rateRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keymesh_turn_rate_refusals_total",
			Help: "TURN allocations refused because their source exceeded its allocation rate (486).",
		}),
		peerRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keymesh_turn_peer_refusals_total",
			Help: "TURN permissions, channel binds and connects refused for their peer address (403 Forbidden).",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keymesh_turn_dropped_total",
			Help: "Datagrams the TURN server's guard dropped, by reason (binding, challenge, oversize, integrity-budget).",
		}, []string{"reason"}),
		tcpRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keymesh_turn_tcp_refusals_total",
			Help: "TCP connections closed on accept because their source, the server or the allocation they were opened to held its maximum of open connections.",
		}),
	}
	for _, r := range []string{dropBinding, dropChallenge, dropOversize, dropIntegrity} {
		m.dropped.WithLabelValues(r)
	}
	m.droppedIntegrity = m.dropped.WithLabelValues(dropIntegrity)
	m.guardAuthFailures = make(map[string]prometheus.Counter)
	for _, r := range []string{reasonMalformed, reasonExpired, reasonRealm, reasonIntegrity, reasonNoUsername} {
		m.guardAuthFailures[r] = m.authFailures.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.allocationsActive, m.allocationsTotal, m.authFailures, m.quotaRefusals, m.requestErrors,
		m.capacityRefusals, m.rateRefusals, m.peerRefusals, m.dropped, m.tcpRefusals} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("turnrelay metrics (give each server its own Registerer): %w", err)
		}
	}
	return m, nil
}
