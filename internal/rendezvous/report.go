package rendezvous

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/ratelimit"
	"github.com/keymesh/keymesh/internal/wire"
)

// Defaults of ReportLimit.
const (
	// DefaultReportRate and DefaultReportBurst bound the outcome reports
	// one source (IPv4 address or IPv6 /64) may have counted: every
	// session gives each of its peers one report, so this is sessions per
	// second per address, with room for a NAT full of peers starting at
	// once.
	DefaultReportRate  = 2
	DefaultReportBurst = 60
	// MaxReportSwitches caps the path switches one report adds, so one
	// report cannot move the counter far.
	MaxReportSwitches = 64
)

// ReportLimit bounds the outcome reports (wire.Report) a source may have
// counted. Reports carry no addresses or peer IDs; they only add to the
// traversal metrics.
type ReportLimit struct {
	// PerSecond is the sustained rate per source (default
	// DefaultReportRate); negative refuses every report.
	PerSecond float64
	// Burst is the bucket depth (default DefaultReportBurst).
	Burst int
	// Sources bounds the sources tracked (default DefaultRateSources).
	Sources int
}

func (l *ReportLimit) defaults() {
	if l.PerSecond == 0 {
		l.PerSecond = DefaultReportRate
	}
	if l.Burst <= 0 {
		l.Burst = DefaultReportBurst
	}
	if l.Sources <= 0 {
		l.Sources = DefaultRateSources
	}
}

// outcomeNames are the result label values, by wire.Outcome* constant.
var outcomeNames = [...]string{
	wire.OutcomeFailed:      "failed",
	wire.OutcomeDirect:      "direct",
	wire.OutcomeRelayUDP:    "relay_udp",
	wire.OutcomeRelayStream: "relay_stream",
}

// NATLabel is the local_nat/remote_nat label value of a NAT behaviour
// (wire.NAT.String; "unknown" for a value no peer should send).
func NATLabel(n wire.NAT) string {
	if n > wire.NATUDPBlocked {
		n = wire.NATUnknown
	}
	return n.String()
}

// OutcomeLabel is the result label value of a wire.Outcome* constant.
func OutcomeLabel(o byte) string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// timeBuckets are the histogram buckets of traversal times, in seconds:
// from a LAN round trip to a birthday-paradox punch that takes its time.
var timeBuckets = []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60}

// traversalMetrics are the metrics made from outcome reports. They count
// per instance; PromQL sums them across instances (see
// deploy/observability).
type traversalMetrics struct {
	outcomes     *prometheus.CounterVec
	firstByte    prometheus.Histogram
	toDirect     prometheus.Histogram
	switches     prometheus.Counter
	refusedLimit prometheus.Counter
}

func newTraversalMetrics(reg prometheus.Registerer) (*traversalMetrics, error) {
	var firstErr error
	keep := func(err error) {
		if firstErr == nil && err != nil {
			firstErr = fmt.Errorf("traversal metrics: %w", err)
		}
	}
	m := &traversalMetrics{}
	var err error
	m.outcomes, err = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keymesh_traversal_outcomes_total",
		Help: "Sessions peers reported, by the reporter's side (initiator: it sent the Connect; responder), its NAT behaviour, the other side's, and the result (direct, relay_udp, relay_stream, failed). Each session is reported by both its peers: count side=\"initiator\" for sessions.",
	}, []string{"side", "local_nat", "remote_nat", "result"}))
	keep(err)
	m.firstByte, err = register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "keymesh_traversal_time_to_first_byte_seconds", Buckets: timeBuckets,
		Help: "Reported time from a peer's introduction to the first frame from the other side, on any path.",
	}))
	keep(err)
	m.toDirect, err = register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "keymesh_traversal_time_to_direct_seconds", Buckets: timeBuckets,
		Help: "Reported time from a peer's introduction to its first direct path, for sessions that went direct.",
	}))
	keep(err)
	m.switches, err = register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keymesh_traversal_path_switches_total",
		Help: fmt.Sprintf("Switches between direct and relayed paths that peers reported (at most %d per report).", MaxReportSwitches),
	}))
	keep(err)
	refused, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keymesh_traversal_reports_refused_total",
		Help: "Outcome reports not counted, by reason (rate_limited: over the per-source report limit).",
	}, []string{"reason"}))
	keep(err)
	m.refusedLimit = refused.WithLabelValues("rate_limited")
	return m, firstErr
}

// reports is the server's outcome-report intake.
type reports struct {
	limiter *ratelimit.Limiter
	off     bool
	m       *traversalMetrics
}

func newReports(cfg ReportLimit, m *traversalMetrics) *reports {
	return &reports{
		off: cfg.PerSecond < 0,
		m:   m,
		limiter: ratelimit.New(ratelimit.Config{
			PerSecond: max(cfg.PerSecond, 1), Burst: float64(cfg.Burst), MaxSources: cfg.Sources,
		}),
	}
}

// report counts a peer's outcome report. It answers nothing but a
// challenge: the report's cookie must prove its source address before the
// source's report budget is touched.
func (s *Server) report(sc *scratch, req *request, m *wire.Report) []outPacket {
	if !s.cfg.Cookies.Check(req.from, m.Cookie) {
		return s.challenge(sc, req, wire.MsgReport)
	}
	r := s.reports
	if r.off || !r.limiter.Allow(req.from.Addr(), req.now.UnixNano()) {
		r.m.refusedLimit.Inc()
		return nil
	}
	side := "responder"
	if m.Initiator {
		side = "initiator"
	}
	r.m.outcomes.WithLabelValues(side, NATLabel(m.LocalNAT), NATLabel(m.RemoteNAT), OutcomeLabel(m.Outcome)).Inc()
	if m.Outcome != wire.OutcomeFailed && m.FirstByteMs > 0 {
		r.m.firstByte.Observe(msSeconds(m.FirstByteMs))
	}
	if m.Outcome == wire.OutcomeDirect && m.DirectMs > 0 {
		r.m.toDirect.Observe(msSeconds(m.DirectMs))
	}
	r.m.switches.Add(float64(min(m.Switches, MaxReportSwitches)))
	return nil
}

func msSeconds(ms uint32) float64 { return (time.Duration(ms) * time.Millisecond).Seconds() }
