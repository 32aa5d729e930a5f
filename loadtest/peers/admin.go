package peers

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// adminSample is what one scrape of a server's /metrics tells.
type adminSample struct {
	rss, heap, peers float64
	regs, connects   float64 // registrations and connects (found) served
	rejected         map[string]float64
}

// scrapeAdmin reads an external server's /metrics (base admin URL or the
// /metrics URL itself).
func scrapeAdmin(ctx context.Context, url string) (adminSample, error) {
	s := adminSample{rejected: map[string]float64{}}
	if !strings.HasSuffix(url, "/metrics") {
		url = strings.TrimSuffix(url, "/") + "/metrics"
	}
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second) // a server under a million peers answers slowly
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return s, fmt.Errorf("--admin %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, fmt.Errorf("--admin %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("--admin %s: HTTP %d", url, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return s, fmt.Errorf("--admin %s: parse metrics: %w", url, err)
	}
	one := func(name string) float64 {
		f := fams[name]
		if f == nil || len(f.Metric) == 0 {
			return -1
		}
		m := f.Metric[0]
		if m.Gauge != nil {
			return m.Gauge.GetValue()
		}
		if m.Counter != nil {
			return m.Counter.GetValue()
		}
		return -1
	}
	s.rss = one("process_resident_memory_bytes")
	s.heap = one("go_memstats_heap_alloc_bytes")
	s.peers = one("keymesh_rendezvous_registered_peers")
	s.regs = one("keymesh_rendezvous_registrations_total")
	if f := fams["keymesh_rendezvous_connects_total"]; f != nil {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetName() == "result" && l.GetValue() == "found" {
					s.connects = m.Counter.GetValue()
				}
			}
		}
	}
	if f := fams["keymesh_rendezvous_rejected_total"]; f != nil {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetName() == "reason" && m.Counter.GetValue() > 0 {
					s.rejected[l.GetValue()] = m.Counter.GetValue()
				}
			}
		}
	}
	return s, nil
}
