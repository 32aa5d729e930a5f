package relay

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// reason is why a datagram was dropped: the "reason" label of
// keymesh_relay_dropped_packets_total.
type reason uint8

const (
	reasonTruncated        reason = iota // shorter than its frame type needs
	reasonUnknownKey                     // ticket sealed under a key not in the set
	reasonForged                         // ticket failed authentication
	reasonExpired                        // ticket past its expiry
	reasonBadVersion                     // keymesh frame of another protocol version
	reasonMalformed                      // not a frame the relay takes
	reasonRateLimited                    // RelaySend over its source's rate
	reasonBadSignature                   // bind signature did not verify
	reasonStaleTime                      // bind clock too far from the relay's
	reasonSendFailed                     // the kernel refused the forward or reply
	reasonChallengeLimited               // unproven bind over its source's challenge rate
	reasonBindLimited                    // proven bind over its source's bind rate
	reasonBindBudget                     // proven bind over the global signature budget
	numReasons
)

var reasonNames = [numReasons]string{
	reasonTruncated:    "truncated",
	reasonUnknownKey:   "unknown_key",
	reasonForged:       "forged",
	reasonExpired:      "expired",
	reasonBadVersion:   "bad_version",
	reasonMalformed:    "malformed",
	reasonRateLimited:  "rate_limited",
	reasonBadSignature: "bad_signature",
	reasonStaleTime:    "stale_time",
	reasonSendFailed:   "send_failed",

	reasonChallengeLimited: "challenge_limited",
	reasonBindLimited:      "bind_limited",
	reasonBindBudget:       "bind_budget",
}

func (r reason) String() string { return reasonNames[r] }

// metrics are the server's Prometheus collectors.
type metrics struct {
	received  prometheus.Counter
	forwarded prometheus.Counter
	fwdBytes  prometheus.Counter
	binds     prometheus.Counter
	opens     prometheus.Counter
	challenge prometheus.Counter
	dropped   [numReasons]prometheus.Counter
	sockets   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keymesh_relay_received_packets_total",
			Help: "Datagrams the ticket relay read.",
		}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keymesh_relay_forwarded_packets_total",
			Help: "Relayed frames forwarded to the address inside a ticket.",
		}),
		fwdBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keymesh_relay_forwarded_bytes_total",
			Help: "Bytes of the Relayed frames forwarded (UDP payload).",
		}),
		opens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keymesh_relay_ticket_opens_total",
			Help: "Tickets opened (AEAD) for RelaySend frames; a run of frames with one ticket in one batch opens it once.",
		}),
		binds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keymesh_relay_binds_total",
			Help: "Binds answered with a ticket.",
		}),
		challenge: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keymesh_relay_challenges_total",
			Help: "Binds from addresses not proven yet, answered with a cookie challenge.",
		}),
		sockets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keymesh_relay_serving_sockets",
			Help: "Sockets a Serve loop is reading.",
		}),
	}
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keymesh_relay_dropped_packets_total",
		Help: "Datagrams dropped, by reason: truncated, unknown_key, forged, expired, bad_version, malformed, " +
			"rate_limited, bad_signature, stale_time, send_failed, challenge_limited, bind_limited, bind_budget.",
	}, []string{"reason"})
	for r := range numReasons {
		m.dropped[r] = dropped.WithLabelValues(reasonNames[r])
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.received, m.forwarded, m.fwdBytes, m.binds, m.opens, m.challenge, dropped, m.sockets} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("relay metrics (give each server its own Registerer): %w", err)
		}
	}
	return m, nil
}

// stats are one Serve loop's counts since its last flush, so that the hot
// loop touches shared counters once per batch, not once per packet.
type stats struct {
	received, forwarded, fwdBytes, binds, challenges, opens uint64
	dropped                                                 [numReasons]uint64
}

func (st *stats) drop(r reason) { st.dropped[r]++ }

// flush adds st to the metrics and zeroes it.
func (m *metrics) flush(st *stats) {
	add := func(c prometheus.Counter, v uint64) {
		if v != 0 {
			c.Add(float64(v))
		}
	}
	add(m.received, st.received)
	add(m.forwarded, st.forwarded)
	add(m.fwdBytes, st.fwdBytes)
	add(m.binds, st.binds)
	add(m.opens, st.opens)
	add(m.challenge, st.challenges)
	for r, v := range st.dropped {
		add(m.dropped[r], v)
	}
	*st = stats{}
}
