package observability_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/rzclient"
	"github.com/keymesh/keymesh/internal/testutil/bintest"
	"github.com/keymesh/keymesh/internal/wire"

	"github.com/keymesh/keymesh/internal/testutil/metricstest"
)

// fromPrometheus are series Prometheus itself makes (not the servers).
var fromPrometheus = map[string]bool{"up": true}

// metricRe finds metric names in PromQL: the servers' own families, the
// Go and process collectors, and Prometheus's up.
var metricRe = regexp.MustCompile(`\b((?:keymesh|go|process)_[a-z0-9_]+)\b|\bup\{`)

// usedMetrics lists the metric names the rules and the dashboard query,
// with where each is used.
func usedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	used := map[string][]string{}
	add := func(where, expr string) {
		for _, m := range metricRe.FindAllStringSubmatch(expr, -1) {
			name := m[1]
			if name == "" {
				name = "up"
			}
			if !slices.Contains(used[name], where) {
				used[name] = append(used[name], where)
			}
		}
	}
	for where, e := range dashboardExprs(t, loadDashboard(t)) {
		add("dashboard "+where, e)
	}
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	add(rulesFile, string(rules))
	return used
}

// TestMetricsExported builds the rendezvous and relay (with TURN and the
// stream relay on), scrapes their /metrics, and wants every metric name
// the rules and the dashboard use among the families they export. A
// histogram counts with its _bucket, _sum and _count series.
func TestMetricsExported(t *testing.T) {
	used := usedMetrics(t)
	if len(used) < 15 {
		t.Fatalf("found only %d metric names in the rules and the dashboard: %v", len(used), used)
	}
	bins := buildServers(t)
	work := t.TempDir()

	rz := startServer(t, work, filepath.Join(bins, "rendezvous"), "--listen", "127.0.0.1:0",
		"--key", filepath.Join(work, "rz.key"), "--admin", "127.0.0.1:0")
	rzAdmin := strings.TrimSuffix(strings.TrimPrefix(rz.waitLine(t, "admin: http://"), "admin: http://"), "/metrics")
	// The traversal metrics have series once a peer reported a session.
	sendReport(t, strings.TrimPrefix(rz.waitLine(t, "connect string: "), "connect string: "))
	waitMetric(t, rzAdmin, "keymesh_traversal_outcomes_total")

	secret := filepath.Join(work, "turn.secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rl := startServer(t, work, filepath.Join(bins, "relay"), "--dev", "--listen", "127.0.0.1:0",
		"--key", filepath.Join(work, "relay.key"), "--admin", "127.0.0.1:0", "--log-format", "json",
		"--turn-listen", "127.0.0.1:0", "--turn-secret-file", secret, "--tls-listen", "127.0.0.1:0")
	var ready struct{ Admin string }
	if err := json.Unmarshal([]byte(rl.waitLine(t, `{`, `"msg":"relay ready"`)), &ready); err != nil || ready.Admin == "" {
		t.Fatalf("relay ready record without admin address: %v", err)
	}

	exported := map[string]bool{}
	for _, admin := range []string{rzAdmin, ready.Admin} {
		for name, mf := range scrape(t, admin) {
			exported[name] = true
			if mf.GetType() == dto.MetricType_HISTOGRAM {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					exported[name+s] = true
				}
			}
		}
	}
	for name, where := range used {
		if fromPrometheus[name] {
			continue
		}
		if !exported[name] {
			t.Errorf("metric %s is not exported by the rendezvous or the relay; used in %s", name, strings.Join(where, "; "))
		}
	}
}

// sendReport sends the rendezvous at connect a peer's outcome report, as
// a node does (answering the cookie challenge).
func sendReport(t *testing.T, connect string) {
	t.Helper()
	server, key, err := rzclient.ParseServer(connect)
	if err != nil {
		t.Fatal(err)
	}
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c, err := rzclient.New(rzclient.Config{Identity: id, Server: server, ServerKey: key,
		Send: func(b []byte, to netip.AddrPort) error { _, err := conn.WriteToUDPAddrPort(b, to); return err }})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.HandleFrame(buf[:n], from)
		}
	}()
	if err := c.Report(wire.Report{Initiator: true, LocalNAT: wire.NATEndpointIndep, RemoteNAT: wire.NATAddrPortDepend,
		Outcome: wire.OutcomeDirect, FirstByteMs: 40, DirectMs: 300, Switches: 1}); err != nil {
		t.Fatal(err)
	}
}

// waitMetric waits up to 10 s for a metric family in a server's scrape.
func waitMetric(t *testing.T, admin, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for scrape(t, admin)[name] == nil {
		if time.Now().After(deadline) {
			t.Fatalf("%s/metrics has no %s within 10 s", admin, name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scrape fetches and parses a server's /metrics.
func scrape(t *testing.T, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	return metricstest.Scrape(t, "http://"+admin+"/metrics")
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// buildServers builds cmd/rendezvous and cmd/relay once per test binary.
func buildServers(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "keymesh-observability-bin-")
		if buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		_, buildErr = bintest.Build(ctx, buildDir)
	})
	if buildErr != nil {
		t.Fatalf("building the servers: %v", buildErr)
	}
	return buildDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// server is a server process whose output goes to a buffer.
type server struct {
	mu  sync.Mutex
	out bytes.Buffer
	cmd *exec.Cmd
}

func (s *server) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Write(b)
}

// startServer starts bin in dir; the test's cleanup kills it.
func startServer(t *testing.T, dir, bin string, args ...string) *server {
	t.Helper()
	s := &server{cmd: exec.Command(bin, args...)}
	s.cmd.Dir = dir
	s.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	s.cmd.Stdout, s.cmd.Stderr = s, s
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-done
	})
	return s
}

// waitLine waits up to 20 s for an output line with the given prefix that
// contains every string in has, and returns it.
func (s *server) waitLine(t *testing.T, prefix string, has ...string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		text := s.out.String()
		s.mu.Unlock()
	lines:
		for _, l := range strings.Split(text, "\n") {
			if !strings.HasPrefix(l, prefix) {
				continue
			}
			for _, h := range has {
				if !strings.Contains(l, h) {
					continue lines
				}
			}
			return l
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t.Fatalf("%s printed no line %q %v within 20 s; output:\n%s", s.cmd.Path, prefix, has, s.out.String())
	return ""
}
