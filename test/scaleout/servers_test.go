//go:build linux

package scaleout_test

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/testutil/metricstest"
)

// Test timing: a short refresh, so "within one refresh interval" is quick.
const (
	refresh = 2 * time.Second
	ttl     = 6 * time.Second
)

// rzInstance is one rendezvous process.
type rzInstance struct {
	*proc
	name  string // --instance
	admin string // http://host:port
}

// rzGroup is several rendezvous instances on one UDP address, sharing one
// server key, one cookie secret and one Redis.
type rzGroup struct {
	addr      netip.AddrPort
	key       crypto.PeerID
	instances []*rzInstance
}

var (
	connectRe = regexp.MustCompile(`connect string: (\S+)#(\S+)\n`)
	adminRe   = regexp.MustCompile(`admin: (http://\S+)/metrics\n`)
)

// startRendezvousGroup starts n instances named rz1..rzN with the Redis
// registry at redisAddr. The first picks a free port on 127.0.0.1; the
// others bind the same one (SO_REUSEPORT).
func startRendezvousGroup(t *testing.T, n int, redisAddr string) *rzGroup {
	t.Helper()
	bin, _ := binaries(t)
	dir := t.TempDir()
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	keyFile, secretFile := filepath.Join(dir, "rendezvous.key"), filepath.Join(dir, "cookie.secret")
	if err := crypto.WriteKeyFile(keyFile, id); err != nil {
		t.Fatal(err)
	}
	writeSecret(t, secretFile)
	g := &rzGroup{key: id.ID()}
	listen := "127.0.0.1:0"
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("rz%d", i)
		p := startProc(t, name, bin,
			"--listen", listen, "--key", keyFile, "--cookie-secret-file", secretFile,
			"--registry", "redis", "--redis", "redis://"+redisAddr+"/0",
			"--refresh", refresh.String(), "--ttl", ttl.String(),
			"--instance", name, "--admin", "127.0.0.1:0", "--log-format", "json")
		m := p.waitOutput(t, "stdout", connectRe, 10*time.Second)
		addr, err := netip.ParseAddrPort(m[1])
		if err != nil {
			t.Fatalf("%s connect string %q: %v", name, m[0], err)
		}
		if m[2] != id.ID().String() {
			t.Fatalf("%s serves key %s, want the shared %s", name, m[2], id.ID())
		}
		if i == 1 {
			g.addr, listen = addr, addr.String()
		} else if addr != g.addr {
			t.Fatalf("%s bound %v, want the shared %v", name, addr, g.addr)
		}
		admin := p.waitOutput(t, "stdout", adminRe, 10*time.Second)[1]
		g.instances = append(g.instances, &rzInstance{proc: p, name: name, admin: admin})
	}
	return g
}

// metrics is one scrape of an admin /metrics: sample values keyed by
// name{label="value",...} (labels sorted) or the bare name.
type metrics map[string]float64

// scrape reads an admin endpoint's /metrics.
func scrape(t *testing.T, admin string) metrics {
	t.Helper()
	code, body := httpGet(t, admin+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("%s/metrics: HTTP %d", admin, code)
	}
	fams, err := metricstest.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s/metrics: %v", admin, err)
	}
	return metricstest.Samples(fams)
}

// httpGet fetches url with a short timeout; a failed request is status 0.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	cl := http.Client{Timeout: 3 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const (
	mRegistrations = "keymesh_rendezvous_registrations_total"
	mConnectsFound = `keymesh_rendezvous_connects_total{result="found"}`
	mPunches       = "keymesh_rendezvous_punches_sent_total"
	mPeers         = "keymesh_rendezvous_registered_peers"
	mRegistryUp    = "keymesh_rendezvous_registry_up"
	mRegistryErrs  = "keymesh_rendezvous_registry_errors_total"
	mSTUN          = "keymesh_rendezvous_stun_answered_total"
)

// fmtCounts formats per-instance values for failure messages.
func fmtCounts(names []string, vals []float64) string {
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(n + "=" + strconv.FormatFloat(vals[i], 'f', -1, 64))
	}
	return b.String()
}
