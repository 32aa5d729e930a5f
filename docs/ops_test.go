package docs_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	dto "github.com/prometheus/client_model/go"

	"github.com/keymesh/keymesh/internal/testutil/metricstest"
	"github.com/keymesh/keymesh/internal/testutil/wait"
)

// TestServerOps starts rendezvous and relay on loopback with JSON logs and
// admin endpoints on free ports, and checks what an operator relies on:
// --version, /healthz, /readyz, /version, Prometheus /metrics with the
// server's own families and build info (counters that move with traffic),
// JSON log lines, and a clean exit on SIGTERM.
func TestServerOps(t *testing.T) {
	work := t.TempDir()
	env := baseEnv(work)

	t.Run("version", func(t *testing.T) {
		for _, c := range [][]string{{"rendezvous", "--version"}, {"relay", "--version"}, {"peer", "version"}, {"peer", "--version"}} {
			r := runCmd(t, work, env, c[0], c[1:]...)
			if r.code != 0 || !strings.Contains(r.stdout, testVersion) {
				t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 0 and %s", strings.Join(c, " "), r.code, r.stdout, r.stderr, testVersion)
			}
		}
	})

	t.Run("rendezvous", func(t *testing.T) {
		p := startProc(t, work, env, "rendezvous", "--listen", "127.0.0.1:0",
			"--key", filepath.Join(work, "rz.key"), "--admin", "127.0.0.1:0", "--log-format", "json")
		admin := rendezvousAdmin(t, p)
		connect := strings.TrimPrefix(p.waitLine(t, false, "its connect string", func(l string) bool {
			return strings.HasPrefix(l, "connect string: ")
		}), "connect string: ")
		udp, _, _ := strings.Cut(connect, "#")

		checkAdmin(t, admin, "rendezvous", []string{"keymesh_rendezvous_packets_total", "keymesh_rendezvous_registered_peers"})
		before := counter(t, admin, "keymesh_rendezvous_stun_answered_total")
		stunBinding(t, udp)
		if after := counter(t, admin, "keymesh_rendezvous_stun_answered_total"); after != before+1 {
			t.Errorf("keymesh_rendezvous_stun_answered_total went %v -> %v after one STUN request, want +1", before, after)
		}
		stopAndCheckLogs(t, p, "rendezvous stopped")
	})

	t.Run("relay", func(t *testing.T) {
		p := startProc(t, work, env, "relay", "--dev", "--listen", "127.0.0.1:0",
			"--key", filepath.Join(work, "relay.key"), "--admin", "127.0.0.1:0", "--log-format", "json")
		rec := waitJSONLog(t, p, "relay ready")
		admin, _ := rec["admin"].(string)
		udp, _ := rec["udp"].(string)
		checkAdmin(t, admin, "relay", []string{"keymesh_relay_received_packets_total", "keymesh_relay_forwarded_packets_total"})
		before := counter(t, admin, "keymesh_relay_received_packets_total")
		c, err := net.Dial("udp", udp)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("not a relay packet")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "keymesh_relay_received_packets_total to count a datagram", func() bool {
			return counter(t, admin, "keymesh_relay_received_packets_total") > before
		})
		stopAndCheckLogs(t, p, "relay stopped")
	})
}

// rendezvousAdmin is the admin address the rendezvous server prints.
func rendezvousAdmin(t *testing.T, p *proc) string {
	t.Helper()
	l := p.waitLine(t, false, "its admin address", func(l string) bool { return strings.HasPrefix(l, "admin: http://") })
	return strings.TrimSuffix(strings.TrimPrefix(l, "admin: http://"), "/metrics")
}

// checkAdmin checks the admin endpoints of a server.
func checkAdmin(t *testing.T, admin, server string, families []string) {
	t.Helper()
	for _, path := range []string{"/healthz", "/readyz"} {
		if body := httpGet(t, "http://"+admin+path); strings.TrimSpace(body) != "ok" {
			t.Errorf("%s %s: %q, want ok", server, path, body)
		}
	}
	if v := strings.TrimSpace(httpGet(t, "http://"+admin+"/version")); v != testVersion {
		t.Errorf("%s /version: %q, want %q", server, v, testVersion)
	}
	mfs := metrics(t, admin)
	bi := mfs["keymesh_build_info"]
	if bi == nil || len(bi.Metric) != 1 || bi.GetType() != dto.MetricType_GAUGE || bi.Metric[0].GetGauge().GetValue() != 1 {
		t.Errorf("%s: keymesh_build_info missing or not a single gauge at 1: %v", server, bi)
	} else {
		labels := map[string]string{}
		for _, l := range bi.Metric[0].Label {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["server"] != server || labels["version"] != testVersion {
			t.Errorf("%s: keymesh_build_info labels %v, want server=%s version=%s", server, labels, server, testVersion)
		}
	}
	own := 0
	for name := range mfs {
		if strings.HasPrefix(name, "keymesh_"+server+"_") {
			own++
		}
	}
	if own < 5 {
		t.Errorf("%s: only %d keymesh_%s_* metric families", server, own, server)
	}
	for _, f := range append(families, "go_goroutines", "process_start_time_seconds") {
		if mfs[f] == nil {
			t.Errorf("%s: metric family %s missing", server, f)
		}
	}
}

// metrics fetches /metrics and parses it as Prometheus text format.
func metrics(t *testing.T, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	resp := get(t, "http://"+admin+"/metrics")
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics Content-Type %q, want the text format", ct)
	}
	mfs, err := metricstest.Parse(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text format: %v", err)
	}
	return mfs
}

// counter is the value of a counter or gauge without labels.
func counter(t *testing.T, admin, name string) float64 {
	t.Helper()
	mf := metrics(t, admin)[name]
	if mf == nil || len(mf.Metric) != 1 {
		t.Fatalf("metric %s missing or labelled: %v", name, mf)
	}
	m := mf.Metric[0]
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.GetGauge().GetValue()
}

func get(t *testing.T, url string) *http.Response {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET %s: %s %s", url, resp.Status, body)
	}
	return resp
}

// httpGet GETs url, wants 200 and returns the body.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp := get(t, url)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return string(body)
}

// stunBinding sends a STUN Binding request to addr and waits for the
// success response.
func stunBinding(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := c.Write(req.Raw); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("STUN Binding to %s: %v", addr, err)
	}
	var resp stun.Message
	resp.Raw = buf[:n]
	if err := resp.Decode(); err != nil || resp.Type != stun.BindingSuccess || resp.TransactionID != req.TransactionID {
		t.Fatalf("STUN Binding to %s: answer %v (%v)", addr, resp, err)
	}
}

// waitJSONLog waits for the JSON log record with message msg on stderr.
func waitJSONLog(t *testing.T, p *proc, msg string) map[string]any {
	t.Helper()
	var rec map[string]any
	p.waitLine(t, true, "a JSON log record "+msg, func(l string) bool {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil || m["msg"] != msg {
			return false
		}
		rec = m
		return true
	})
	return rec
}

// stopAndCheckLogs stops a server with SIGTERM, wants exit 0 and a last
// record lastMsg, and every stderr line a JSON log record.
func stopAndCheckLogs(t *testing.T, p *proc, lastMsg string) {
	t.Helper()
	if code := p.stop(t); code != 0 {
		t.Errorf("%s: exit %d after SIGTERM, want 0", p.name, code)
	}
	logs := p.stderr.all()
	if len(logs) < 2 {
		t.Fatalf("%s: only %d log lines", p.name, len(logs))
	}
	for _, l := range logs {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("%s --log-format json: line is not JSON (%v): %s", p.name, err, l)
			continue
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := m[k]; !ok {
				t.Errorf("%s: log record without %q: %s", p.name, k, l)
			}
		}
		if ts, _ := m["time"].(string); ts != "" {
			if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
				t.Errorf("%s: log time %q: %v", p.name, ts, err)
			}
		}
	}
	var last map[string]any
	_ = json.Unmarshal([]byte(logs[len(logs)-1]), &last)
	if last["msg"] != lastMsg {
		t.Errorf("%s: last log record %v, want %q", p.name, last, lastMsg)
	}
}

// waitFor polls cond for up to 5 s (wait.For).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.For(t, 5*time.Second, what, cond)
}
