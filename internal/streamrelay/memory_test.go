package streamrelay

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/obs"

	"github.com/keymesh/keymesh/internal/streamclient"
)

// memChildEnv makes the test binary a stream relay that reports its own
// memory (TestMemoryChild), so that the measuring test's client ends do not
// count.
const memChildEnv = "STREAMRELAY_MEM_CHILD"

// memTunnels is how many idle tunnels the measurement holds.
const memTunnels = 256

// TestMemoryChild is the relay process of measureTunnelMemory; on its own
// it does nothing.
func TestMemoryChild(t *testing.T) {
	if os.Getenv(memChildEnv) != "1" {
		return
	}
	relayID := ident(t)
	srv, err := New(Config{
		PresenceIP:        netip.MustParseAddr("127.0.0.1"),
		AllowDestinations: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		MaxTunnelsPerIP:   1 << 20, MaxTunnelsPerNet: 1 << 20, OpenRate: 1e6, OpenBurst: 1e6,
		Logger: obs.Discard(),
	})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := relayID.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	ts.StartTLS()
	defer ts.Close()
	fmt.Printf("url %s%s#%s\n", strings.Replace(ts.URL, "https://", "wss://", 1), streamclient.Path, relayID.ID())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() != "mem" {
			return
		}
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Printf("mem %d %d %d %d\n", ms.HeapAlloc+ms.StackInuse, runtime.NumGoroutine(), srv.Open(), rss())

	}
}

// rss is the process's resident memory in bytes (Linux), or 0.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// tunnelMemory is what one idle tunnel costs the relay process: live heap
// and goroutine stacks after a GC, and goroutines.
type tunnelMemory struct {
	bytes      float64
	goroutines float64
	rss        float64 // resident memory, the collector's headroom included
}

// measureTunnelMemory starts a relay in a child process, opens memTunnels
// idle tunnels to it and returns the growth of the relay's memory per
// tunnel.
func measureTunnelMemory(tb testing.TB) tunnelMemory {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestMemoryChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), memChildEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
	}()
	out := bufio.NewScanner(stdout)
	line := func(prefix string) []string {
		for out.Scan() {
			if f := strings.Fields(out.Text()); len(f) > 0 && f[0] == prefix {
				return f[1:]
			}
		}
		tb.Fatalf("relay child: no %q line (%v)", prefix, out.Err())
		return nil
	}
	target, err := streamclient.ParseTarget(line("url")[0])
	if err != nil {
		tb.Fatal(err)
	}
	mem := func() (bytes, goroutines, open, rss float64) {
		fmt.Fprintln(stdin, "mem")
		f := line("mem")
		v := make([]float64, 4)
		for i := range v {
			v[i], _ = strconv.ParseFloat(f[i], 64)
		}
		return v[0], v[1], v[2], v[3]
	}
	// One tunnel first, so that what is made once (the sweeper, pools,
	// the TLS server's state) is not counted per tunnel.
	first, err := streamclient.Dial(ctx, target, ident(tb), nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer first.Close()
	time.Sleep(100 * time.Millisecond)
	b0, g0, _, r0 := mem()
	tunnels := make([]*streamclient.Tunnel, 0, memTunnels)
	defer func() {
		for _, tu := range tunnels {
			tu.Close()
		}
	}()
	for range memTunnels {
		tu, err := streamclient.Dial(ctx, target, ident(tb), nil)
		if err != nil {
			tb.Fatal(err)
		}
		tunnels = append(tunnels, tu)
	}
	var b1, g1, open, r1 float64
	for range 50 { // the server side of the last tunnels may still be starting
		if b1, g1, open, r1 = mem(); open == memTunnels+1 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if open != memTunnels+1 {
		tb.Fatalf("relay holds %v tunnels, want %d", open, memTunnels+1)
	}
	return tunnelMemory{bytes: (b1 - b0) / memTunnels, goroutines: (g1 - g0) / memTunnels, rss: (r1 - r0) / memTunnels}
}

// maxTunnelBytes is the most one idle tunnel may cost the relay in live
// heap and goroutine stacks (TunnelBytes, which the --stream-max-tunnels
// help quotes, adds the garbage collector's headroom and the handshake).
const maxTunnelBytes = 28 << 10

// An attacker holding the global cap of idle tunnels grows the relay by
// what one tunnel costs times the cap: that cost has a ceiling.
func TestIdleTunnelMemory(t *testing.T) {
	m := measureTunnelMemory(t)
	t.Logf("idle tunnel: %.0f bytes live, %.1f goroutines, %.0f bytes resident in the relay", m.bytes, m.goroutines, m.rss)
	if raceEnabled {
		return // the race detector's shadow memory is no measure
	}
	if m.bytes > maxTunnelBytes {
		t.Errorf("an idle tunnel costs the relay %.0f bytes, more than %d", m.bytes, maxTunnelBytes)
	}
}

func BenchmarkIdleTunnelMemory(b *testing.B) {
	var m tunnelMemory
	for range b.N {
		m = measureTunnelMemory(b)
	}
	b.ReportMetric(m.bytes, "bytes/tunnel")
	b.ReportMetric(m.goroutines, "goroutines/tunnel")
	b.ReportMetric(m.rss, "rss-bytes/tunnel")
}
