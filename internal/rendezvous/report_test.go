package rendezvous

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/keymesh/keymesh/internal/wire"
)

// sendReport seals r from p (with p's cookie) and returns the replies.
func (f *fixture) sendReport(p *peer, r wire.Report) []outPacket {
	r.Cookie = p.cookie
	return f.exchange(p.addr, f.seal(p, &r))
}

// outcomes reads keymesh_traversal_outcomes_total for one label set.
func (f *fixture) outcomes(side, local, remote, result string) float64 {
	return value(f.srv.reports.m.outcomes.WithLabelValues(side, local, remote, result))
}

// series counts the series of a metric family in the fixture's registry.
func (f *fixture) series(name string) int {
	f.t.Helper()
	mfs, err := f.prom.Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.Metric)
		}
	}
	return 0
}

// TestReportCounted: a report with a valid cookie lands in the outcome
// counter under its NAT pair, side and result, and in the histograms; it
// gets no answer.
func TestReportCounted(t *testing.T) {
	f := newFixture(t, nil)
	a := f.newPeer("203.0.113.10:4000")
	f.register(a, wire.Register{NAT: wire.NATEndpointIndep})
	out := f.sendReport(a, wire.Report{Initiator: true, LocalNAT: wire.NATEndpointIndep, RemoteNAT: wire.NATAddrPortDepend,
		Outcome: wire.OutcomeDirect, FirstByteMs: 80, DirectMs: 700, Switches: 1})
	if len(out) != 0 {
		t.Fatalf("report answered with %d datagrams, want none", len(out))
	}
	if got := f.outcomes("initiator", "endpoint_independent", "address_port_dependent", "direct"); got != 1 {
		t.Errorf("outcomes initiator/endpoint_independent/address_port_dependent/direct = %v, want 1", got)
	}
	f.sendReport(a, wire.Report{LocalNAT: wire.NATUDPBlocked, RemoteNAT: wire.NATNone, Outcome: wire.OutcomeRelayStream, FirstByteMs: 300})
	if got := f.outcomes("responder", "udp_blocked", "none", "relay_stream"); got != 1 {
		t.Errorf("outcomes responder/udp_blocked/none/relay_stream = %v, want 1", got)
	}
	if got := histCount(t, f.srv.reports.m.firstByte); got != 2 {
		t.Errorf("time to first byte observed %d times, want 2", got)
	}
	if got := histCount(t, f.srv.reports.m.toDirect); got != 1 {
		t.Errorf("time to direct observed %d times, want 1 (only the direct session)", got)
	}
	if got := value(f.srv.reports.m.switches); got != 1 {
		t.Errorf("path switches %v, want 1", got)
	}
}

// TestReportNeedsCookie: a report from a spoofed source address (no cookie
// for it, or another address's cookie) is answered with a challenge no
// larger than the report and counts nothing, so nobody inflates the
// figures from addresses they do not hold.
func TestReportNeedsCookie(t *testing.T) {
	f := newFixture(t, nil)
	a := f.newPeer("203.0.113.10:4000")
	f.register(a, wire.Register{})
	spoofed := f.newPeer("198.51.100.99:5000")
	spoofed.cookie = a.cookie // a cookie, but for another address
	for _, p := range []*peer{spoofed, f.newPeer("198.51.100.98:5000")} {
		r := wire.Report{Initiator: true, Outcome: wire.OutcomeFailed}
		r.Cookie = p.cookie
		req := f.seal(p, &r)
		out := f.exchange(p.addr, req)
		if len(out) != 1 {
			t.Fatalf("report without a valid cookie: %d replies, want a challenge", len(out))
		}
		if len(out[0].b) > len(req) {
			t.Errorf("challenge of %d bytes answers a %d-byte report: amplification", len(out[0].b), len(req))
		}
		if c, ok := f.open(p, out[0].b).Body.(*wire.Challenge); !ok || c.For != wire.MsgReport {
			t.Errorf("reply %T, want a challenge for the report", f.open(p, out[0].b).Body)
		}
	}
	if n := f.series("keymesh_traversal_outcomes_total"); n != 0 {
		t.Errorf("%d outcome series after reports without valid cookies, want 0", n)
	}
}

// TestReportRateLimited: one address (many ports, fresh keys) gets at most
// the burst of reports counted, then its rate; another address is not
// affected, and the refusals are counted.
func TestReportRateLimited(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Reports = ReportLimit{PerSecond: 2, Burst: 5} })
	send := func(addr string) {
		p := f.newPeer(addr)
		f.register(p, wire.Register{})
		if out := f.sendReport(p, wire.Report{Outcome: wire.OutcomeRelayUDP}); len(out) != 0 {
			t.Fatalf("report answered with %d datagrams", len(out))
		}
	}
	for i := range 20 {
		send(fmt.Sprintf("203.0.113.10:%d", 4000+i))
	}
	if got := f.outcomes("responder", "unknown", "unknown", "relay_udp"); got != 5 {
		t.Errorf("one address sent 20 reports at once: %v counted, want the burst of 5", got)
	}
	if got := value(f.srv.reports.m.refusedLimit); got != 15 {
		t.Errorf("reports refused for the rate limit: %v, want 15", got)
	}
	send("203.0.113.11:4000")
	f.clock.Add(time.Second)
	for i := range 5 {
		send(fmt.Sprintf("203.0.113.10:%d", 5000+i))
	}
	if got := f.outcomes("responder", "unknown", "unknown", "relay_udp"); got != 5+1+2 {
		t.Errorf("after another address's report and one second: %v counted, want 8", got)
	}
}

// TestReportBoundedLabels: reports whose NAT behaviours or outcome lie
// outside the fixed sets are refused as malformed and create no series;
// a replayed report is not counted twice; a peer that turned reports off
// on the server side (negative rate) has none counted.
func TestReportBoundedLabels(t *testing.T) {
	f := newFixture(t, nil)
	a := f.newPeer("203.0.113.10:4000")
	f.register(a, wire.Register{})
	for _, bad := range []wire.Report{{LocalNAT: 6}, {RemoteNAT: 200}, {Outcome: 4}} {
		bad.Cookie = a.cookie
		before := f.rejected("malformed")
		f.exchange(a.addr, f.seal(a, &bad))
		if f.rejected("malformed") != before+1 {
			t.Errorf("report %+v not rejected as malformed", bad)
		}
	}
	if n := f.series("keymesh_traversal_outcomes_total"); n != 0 {
		t.Errorf("%d outcome series after out-of-range reports, want 0", n)
	}
	r := wire.Report{Cookie: a.cookie, Outcome: wire.OutcomeDirect}
	pkt := f.seal(a, &r)
	f.exchange(a.addr, pkt)
	f.exchange(a.addr, pkt)
	if got := f.outcomes("responder", "unknown", "unknown", "direct"); got != 1 {
		t.Errorf("a report sent twice (replayed) counted %v times, want 1", got)
	}

	off := newFixture(t, func(c *Config) { c.Reports.PerSecond = -1 })
	b := off.newPeer("203.0.113.12:4000")
	off.register(b, wire.Register{})
	off.sendReport(b, wire.Report{Outcome: wire.OutcomeDirect})
	if n := off.series("keymesh_traversal_outcomes_total"); n != 0 {
		t.Errorf("reports off: %d outcome series, want 0", n)
	}
}

func histCount(t *testing.T, h prometheus.Histogram) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}
