package peers

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/bintest"
	"github.com/keymesh/keymesh/internal/testutil/ci"
	"github.com/keymesh/keymesh/internal/testutil/redistest"
)

// TestPeersBench runs a small population against an in-process server:
// every peer registers, connects succeed with their punches delivered, and
// the table reports it. LOADTEST_PEERS sets the population (default 100).
func TestPeersBench(t *testing.T) {
	n := 100
	if s := os.Getenv("LOADTEST_PEERS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	o, err := parsePeersFlags([]string{"--count", strconv.Itoa(n), "--duration", "2500ms", "--refresh", "1s", "--ttl", "5s", "--rate-limit", "-1"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	res, err := peersBench(ctx, o, &progress)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if res.regMissed != 0 {
		t.Fatalf("%d peers not registered", res.regMissed)
	}
	c := res.connects
	if c.ok == 0 || c.notFound+c.noAnswer+c.other != 0 {
		t.Fatalf("connects: %+v", c)
	}
	if res.punches < int64(c.ok) {
		t.Fatalf("%d punches for %d connects", res.punches, c.ok)
	}
	if res.steadyRegs < int64(n) {
		t.Fatalf("%d refreshes in 2.5 s at a 1 s refresh, want at least %d", res.steadyRegs, n)
	}
	if res.heapPerPeer <= 0 {
		t.Fatalf("heap per peer %v", res.heapPerPeer)
	}
	var out bytes.Buffer
	res.table(&out)
	for _, want := range []string{"| registrations/s (first", "| connects/s |", "| server heap per registered peer |"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, out.String())
		}
	}
	t.Logf("\n%s", out.String())
}

// TestPeersCompare runs the side-by-side mode against a real Redis: one
// in-process instance with the memory registry, one with Redis, and three
// on one SO_REUSEPORT address sharing Redis. Every peer registers and
// connects in each; with three instances each one served a share; no key
// is left in Redis.
func TestPeersCompare(t *testing.T) {
	if testing.Short() {
		ci.Skip(t, "runs three load phases against Redis")
	}
	rd := redistest.Start(t)
	o, err := parsePeersFlags([]string{"--count", "90", "--duration", "1500ms", "--refresh", "1s", "--ttl", "5s",
		"--compare", "memory:1,redis:1,redis:3", "--redis", "redis://" + rd.Addr() + "/0"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	results, err := peersCompare(ctx, o, &progress)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if len(results) != 3 {
		t.Fatalf("%d results", len(results))
	}
	for i, res := range results {
		c := res.connects
		if res.regMissed != 0 || c.ok == 0 || c.notFound+c.noAnswer+c.other != 0 {
			t.Fatalf("scenario %d: %d missed, connects %+v", i, res.regMissed, c)
		}
	}
	three := results[2]
	if len(three.instNames) != 3 {
		t.Fatalf("redis:3 ran %d instances", len(three.instNames))
	}
	for i, n := range three.instNames {
		if three.instRegs[i] == 0 || three.instConnects[i] == 0 {
			t.Errorf("%s served %v registrations and %v connects: the kernel should spread 90 peers over 3 sockets", n, three.instRegs[i], three.instConnects[i])
		}
	}
	keys, err := exec.Command("redis-cli", "-p", strconv.Itoa(rd.Port()), "--scan", "--pattern", "kmload*").Output()
	if err == nil && len(bytes.TrimSpace(keys)) > 0 {
		t.Errorf("keys left in Redis: %q", keys[:min(len(keys), 200)])
	}
	var out bytes.Buffer
	compareTable(&out, results)
	for _, want := range []string{"| memory, 1 instance | redis, 1 instance | redis, 3 instances |", "| connects/s |", "| registrations / connects served per instance |"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, out.String())
		}
	}
	t.Logf("\n%s", out.String())
}

func TestPeersFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--instances", "3"},
		{"--instances", "0"},
		{"--compare", "memory:2"},
		{"--compare", "redis:1"},
		{"--compare", "etcd:1", "--redis", "redis://x"},
		{"--compare", "redis", "--redis", "redis://x"},
		{"--compare", "memory:1", "--server", "127.0.0.1:1#x"},
		{"--count", "1"},
		{"--count", "100000"},
		{"--registry", "etcd"},
		{"--registry", "redis"},
		{"--server", "127.0.0.1:1#x", "--redis", "redis://x"},
		{"--refresh", "2m"},
		{"extra"},
	} {
		if _, err := parsePeersFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// TestPeersPerSource is the CI form of the million-peer run: 2,000
// simulated peers, 64 behind each socket and loopback source address,
// against the real rendezvous binary started by --rendezvous (its
// per-source limits raised for 64 peers refreshing every second behind one
// address), with the memory and the Redis registry. In each, every peer registers (the
// server's own gauge counts all of them), every connect finds its peer and
// its Punch reaches the target behind its shared socket, and every peer
// refreshes during the steady phase; the identities are made once for both
// servers, which share a key.
func TestPeersPerSource(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bins := bintest.Shared(t)
	rd := redistest.Start(t)
	const n = 2000
	args := []string{"--count", strconv.Itoa(n), "--per-source", "64", "--duration", "3s", "--workers", "4",
		"--rendezvous", bins.Rendezvous, "--rendezvous-args", "--refresh 1s --ttl 5s --rate-limit 400 --rate-burst 400 --key-miss-rate 200",
		"--compare", "memory:1,redis:1", "--redis", "redis://" + rd.Addr() + "/0"}
	o, err := parsePeersFlags(args, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	o.keyFile, o.ids = filepath.Join(t.TempDir(), "rendezvous.key"), &idPool{}
	var progress bytes.Buffer
	results, err := peersCompare(ctx, o, &progress)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if len(results) != 2 {
		t.Fatalf("%d results, want 2", len(results))
	}
	for _, res := range results {
		c := res.connects
		switch {
		case res.regMissed != 0:
			t.Errorf("%s: %d peers not registered", res.opts.registry, res.regMissed)
		case res.opts.registry == "memory" && res.peersGauge != n:
			t.Errorf("memory: the server's gauge counts %v registered peers, want %d", res.peersGauge, n)
		case res.opts.registry == "redis" && (res.peersGauge < 0.98*n || res.peersGauge > 1.02*n):
			// The Redis registry counts with HyperLogLogs (±0.81%).
			t.Errorf("redis: the server's gauge counts %v registered peers, want %d within 2%%", res.peersGauge, n)
		case res.opts.registry == "redis" && res.redisPerPeer <= 0:
			t.Errorf("redis: no Redis memory per peer")
		case c.ok == 0 || c.notFound+c.noAnswer+c.other != 0:
			t.Errorf("%s: connects %d ok, %d not found, %d unanswered, %d other", res.opts.registry, c.ok, c.notFound, c.noAnswer, c.other)
		case res.punches < int64(c.ok):
			t.Errorf("%s: %d punches for %d connects", res.opts.registry, res.punches, c.ok)
		case res.steadyRegs < n:
			t.Errorf("%s: %d refreshes in 3 s at a 1 s refresh, want at least %d", res.opts.registry, res.steadyRegs, n)
		case res.rssAfter <= 0:
			t.Errorf("%s: no server RSS", res.opts.registry)
		}
	}
	if got := strings.Count(progress.String(), "started "); got != 2 {
		t.Errorf("started %d servers, want 2:\n%s", got, progress.String())
	}
	var out bytes.Buffer
	compareTable(&out, results)
	if !strings.Contains(out.String(), "| memory registry, rendezvous process | redis registry, rendezvous process |") ||
		!strings.Contains(out.String(), "64 per UDP socket") {
		t.Errorf("table:\n%s", out.String())
	}
	t.Logf("\n%s", out.String())
}

func TestMain(m *testing.M) {
	code := m.Run()
	bintest.RemoveShared()
	os.Exit(code)
}
