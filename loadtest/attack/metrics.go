package attack

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// counters are a server's refusal counters from /metrics: every sample of
// a counter whose name says it counts refused or dropped input, by its
// full name with labels.
type counters map[string]float64

// isRefusal picks the counters worth reporting: what a server turned
// away and why (TURN requests that failed authentication included).
func isRefusal(name string) bool {
	for _, w := range []string{"rejected", "dropped", "refused", "denied", "limited", "evicted", "auth_failures"} {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// parseCounters reads the Prometheus text format.
func parseCounters(r io.Reader) counters {
	out := counters{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name, val := line[:i], line[i+1:]
		base, _, _ := strings.Cut(name, "{")
		if !isRefusal(base) {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		out[name] = v
	}
	return out
}

// scrape reads a server's /metrics through the server namespace's
// loopback; a server without an answer gives no counters.
func scrape(ctx context.Context, lab *Lab, port int) counters {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, err
			}
			return dialTCP(ctx, lab.Srv, netip.Addr{}, ap)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/metrics", port), nil)
	if err != nil {
		return nil
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	return parseCounters(resp.Body)
}

// delta returns what grew from a to b, as "name{labels} +n" lines, largest
// first.
func delta(a, b counters) []string {
	type kv struct {
		k string
		v float64
	}
	var d []kv
	for k, v := range b {
		if g := v - a[k]; g > 0 {
			d = append(d, kv{k, g})
		}
	}
	slices.SortFunc(d, func(x, y kv) int {
		if x.v != y.v {
			if x.v > y.v {
				return -1
			}
			return 1
		}
		return strings.Compare(x.k, y.k)
	})
	var out []string
	for _, e := range d {
		out = append(out, fmt.Sprintf("%s +%.0f", e.k, e.v))
	}
	return out
}
