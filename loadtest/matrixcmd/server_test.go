package matrixcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/testutil/bintest"
	"github.com/keymesh/keymesh/internal/testutil/ci"
	"github.com/keymesh/keymesh/loadtest/labrun"
	"github.com/keymesh/keymesh/loadtest/matrix"
)

func TestMatrixServerFlags(t *testing.T) {
	o, err := parseMatrixFlags([]string{"--server", "192.0.2.7:3478#x", "--route", "192.0.2.0/28,198.18.0.9"}, io.Discard)
	if err != nil || o.server != "192.0.2.7:3478#x" || len(o.routes) != 2 || o.routes[1].String() != "198.18.0.9/32" {
		t.Fatalf("parse: %+v, %v", o, err)
	}
	for _, args := range [][]string{
		{"--route", "192.0.2.0/28"},
		{"--stream-relay", "wss://192.0.2.7:443/v1/tunnel#x"},
		{"--server", "192.0.2.7:3478#x", "--regions", "2"},
		{"--server", "192.0.2.7:3478#x", "--route", "nope"},
	} {
		if _, err := parseMatrixFlags(args, io.Discard); err == nil || !strings.HasPrefix(err.Error(), "--") {
			t.Errorf("matrix %q: error %v, want one naming the flag", args, err)
		}
	}
}

// outsideAddr is where TestMatrixServer's servers listen: an address the
// test puts on the loopback interface of the root namespace (the host),
// outside every lab namespace and outside the lab's address ranges (which
// an uplink refuses to route), from the documentation range TEST-NET-1: it
// exists on this machine only while the test runs, so nothing leaves it.
const outsideAddr = "192.0.2.1"

// TestMatrixServer runs `loadtest matrix --server` against a rendezvous and
// a relay started outside the lab, in the root namespace on a loopback
// address the test adds: the lab's NATs reach them through the
// uplink, every pair meets its expected outcome (the command fails
// otherwise), and the outside rendezvous's /metrics counts the same direct
// and relayed sessions per NAT pair as the matrix.json the command wrote.
func TestMatrixServer(t *testing.T) {
	ci.NeedRoot(t, "the NAT lab makes network namespaces and a dummy interface")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bins := bintest.Shared(t)
	work := t.TempDir()

	// The outside address, on the host's loopback interface.
	ipRun(t, "addr", "add", outsideAddr+"/32", "dev", "lo")
	t.Cleanup(func() { _ = exec.Command("ip", "addr", "del", outsideAddr+"/32", "dev", "lo").Run() })

	keyFile := filepath.Join(work, "tickets.keys")
	if err := os.WriteFile(keyFile, []byte(crypto.NewTicketKeyLine(1)), 0o600); err != nil {
		t.Fatal(err)
	}
	relayAddr := outsideAddr + ":3479"
	startOutside(t, ctx, work, bins.Relay, "--listen", relayAddr, "--admin", "127.0.0.1:0", "--ticket-key-file", keyFile).
		wait(t, "relay ready")
	rz := startOutside(t, ctx, work, bins.Rendezvous, "--listen", outsideAddr+":3478", "--key", filepath.Join(work, "rz.key"),
		"--admin", "127.0.0.1:0", "--relay", relayAddr, "--public-addr", outsideAddr, "--instance", "outside")
	connect := strings.TrimPrefix(rz.wait(t, "connect string: "), "connect string: ")
	admin := strings.TrimPrefix(rz.wait(t, "admin: "), "admin: ")

	out := filepath.Join(work, "results")
	args := []string{"--server", connect, "--bin", filepath.Dir(bins.Peer), "--types", "public,port-restricted,symmetric",
		"--trials", "1", "--quick", "--parallel", "3", "--timeout", "8s", "--out", out}
	if err := Main(ctx, args); err != nil {
		t.Fatalf("loadtest matrix %s: %v\nrendezvous:\n%s", strings.Join(args, " "), err, rz.text())
	}
	data, err := os.ReadFile(filepath.Join(out, "matrix.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep matrix.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("matrix.json: %v", err)
	}
	run := 0
	for _, p := range rep.Pairs {
		if p.Trials > 0 {
			run++
			if !p.Met() {
				t.Errorf("%s -> %s: %d direct, %d relayed, %d failed; expected %s", p.A, p.B, p.Direct, p.Relay, p.Failed, p.Expected)
			}
		}
	}
	if run != 9 {
		t.Fatalf("matrix.json has %d pairs with trials, want 9", run)
	}
	want := labrun.MatrixByNAT(rep)
	var got map[labrun.NATPair]labrun.OutcomeCounts
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		text := httpGet(t, ctx, admin)
		if got, err = labrun.ParseOutcomes(text); err != nil {
			t.Fatal(err)
		}
		if equalCounts(got, want) || time.Now().After(deadline) {
			break
		}
	}
	for k, w := range want {
		g := got[k]
		t.Logf("%s -> %s: matrix.json %d direct, %d relayed; outside /metrics %d direct, %d relayed", k.Local, k.Remote, w.Direct, w.Relay, g.Direct, g.Relay)
	}
	if !equalCounts(got, want) {
		t.Errorf("the outside rendezvous counts %v, matrix.json %v", got, want)
	}
}

// equalCounts compares direct and relayed sessions per NAT pair.
func equalCounts(got, want map[labrun.NATPair]labrun.OutcomeCounts) bool {
	for k, w := range want {
		if g := got[k]; g.Direct != w.Direct || g.Relay != w.Relay {
			return false
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok && g.Direct+g.Relay > 0 {
			return false
		}
	}
	return true
}

func TestMain(m *testing.M) {
	code := m.Run()
	bintest.RemoveShared()
	os.Exit(code)
}

func ipRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// outsideProc is a server process in the root namespace with its output.
type outsideProc struct {
	mu  sync.Mutex
	out bytes.Buffer
}

func (p *outsideProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *outsideProc) text() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func startOutside(t *testing.T, ctx context.Context, dir, bin string, args ...string) *outsideProc {
	t.Helper()
	p := &outsideProc{}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = p, p
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	return p
}

// wait waits up to 20 s for a line containing s and returns it (trimmed).
func (p *outsideProc) wait(t *testing.T, s string) string {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, l := range strings.Split(p.text(), "\n") {
			if strings.Contains(l, s) {
				return strings.TrimSpace(l[strings.Index(l, s):])
			}
		}
	}
	t.Fatalf("no line %q within 20 s:\n%s", s, p.text())
	return ""
}

func httpGet(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}
