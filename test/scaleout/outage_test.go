//go:build linux

package scaleout_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/keymesh/keymesh/internal/rzclient"
	"github.com/keymesh/keymesh/internal/testutil/redistest"
)

// TestRedisOutage stops Redis under two rendezvous instances sharing one
// address and starts it again (empty: nothing is persisted). While it is
// down every instance says so in one log line and fails /readyz (not
// /healthz: the outage is every instance's, so draining one helps nobody),
// keeps answering STUN and refuses registrations and connects with
// "registry unavailable"; once it is back they recover by themselves,
// without a restart: /readyz passes, a log line says so, and every peer is
// registered and reachable again within one refresh interval plus the
// peers' retry backoff.
func TestRedisOutage(t *testing.T) {
	const numPeers = 10
	rd := redistest.Start(t)
	g := startRendezvousGroup(t, 2, rd.Addr())
	peers := startPeers(t, numPeers, g.addr, g.key)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if err := connect(ctx, peers[0], peers[1]); err != nil {
		t.Fatalf("connect before the outage: %v", err)
	}
	for _, in := range g.instances {
		if code, body := httpGet(t, in.admin+"/readyz"); code != http.StatusOK {
			t.Fatalf("%s /readyz before the outage: %d %q", in.name, code, body)
		}
	}
	pids := map[string]int{}
	for _, in := range g.instances {
		pids[in.name] = in.cmd.Process.Pid
	}

	rd.Stop()
	down := time.Now()
	for _, in := range g.instances {
		// One clear line (the registry watch notices within a second,
		// traffic sooner) ...
		in.waitOutput(t, "stderr", reLine(`"level":"ERROR","msg":"registry unreachable`), 5*time.Second)
		line := grepLine(in.stderr.String(), "registry unreachable")
		if !strings.Contains(line, "redis") || !strings.Contains(line, `"instance":"`+in.name+`"`) {
			t.Errorf("%s outage line does not name Redis and the instance: %s", in.name, line)
		}
		// ... a failing /readyz that says why, a passing /healthz ...
		code, body := httpGet(t, in.admin+"/readyz")
		if code == http.StatusOK || !strings.Contains(body, "registry") {
			t.Errorf("%s /readyz while Redis is down: %d %q, want a failure naming the registry", in.name, code, body)
		}
		if code, body := httpGet(t, in.admin+"/healthz"); code != http.StatusOK {
			t.Errorf("%s /healthz while Redis is down: %d %q, want it passing (the outage is every instance's)", in.name, code, body)
		}
		if up := scrape(t, in.admin)[mRegistryUp]; up != 0 {
			t.Errorf("%s registry_up %v while Redis is down", in.name, up)
		}
	}
	t.Logf("outage noticed by every instance %v after Redis stopped", time.Since(down).Round(time.Millisecond))

	// Still serving what it can: STUN, from every instance (each source
	// port is a flow the kernel may hash to either).
	before := scrapeAll(t, g, mSTUN)
	for i := 0; i < 16; i++ {
		stunCheck(t, g.addr)
	}
	after := scrapeAll(t, g, mSTUN)
	total := 0.0
	for _, in := range g.instances {
		d := after[in.name][mSTUN] - before[in.name][mSTUN]
		total += d
		if d == 0 {
			t.Errorf("%s answered none of 16 STUN requests from distinct ports while Redis was down", in.name)
		}
	}
	if total != 16 {
		t.Errorf("STUN answers counted %v, want 16", total)
	}
	// Registrations and connects are refused with a reason, not dropped.
	// (A peer that is not refreshing, so that only the connect sets its
	// last error.)
	idle := newSimPeer(t, numPeers, g.addr, g.key)
	go idle.read()
	t.Cleanup(func() { idle.conn.Close() })
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := idle.c.ConnectPeer(cctx, peers[3].id.ID())
	ccancel()
	if !errors.Is(err, rzclient.ErrNoAnswer) || !strings.Contains(err.Error(), rzclient.ErrUnavailable.Error()) {
		t.Errorf("connect while Redis is down: %v, want no answer with %q", err, rzclient.ErrUnavailable)
	}
	// Let every peer's refresh fail at least once.
	time.Sleep(refresh)
	for _, in := range g.instances {
		if scrape(t, in.admin)[mRegistryErrs] == 0 {
			t.Errorf("%s counted no registry errors during the outage", in.name)
		}
	}
	for _, p := range peers {
		if p.c.Status().LastError == "" {
			t.Errorf("peer %d shows no error during the outage", p.idx)
		}
	}

	rd.Restart()
	back := time.Now()
	for _, in := range g.instances {
		in.waitOutput(t, "stderr", reLine(`"msg":"registry reachable again"`), 5*time.Second)
		// One line for the outage, one for its end: no flood of
		// per-request or per-dial lines.
		logs := in.stderr.String()
		if n := strings.Count(logs, "registry unreachable"); n != 1 {
			t.Errorf("%s logged the outage %d times, want once", in.name, n)
		}
		if n := strings.Count(logs, "\n") - strings.Count(logs, `"level":"INFO"`) - strings.Count(logs, `"level":"WARN"`) - 1; n != 0 {
			t.Errorf("%s logged %d lines besides the outage line and info/warnings:\n%s", in.name, n, tail(logs, 20))
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			code, _ := httpGet(t, in.admin+"/readyz")
			if code == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s /readyz still %d 5 s after Redis came back", in.name, code)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Redis came back empty: every peer must register again (its next
	// retry, at most the peers' 1 s backoff cap, or its next refresh) and
	// be reachable.
	reachable := make([]bool, len(peers))
	var all time.Duration
	for left := len(peers); left > 0; {
		if time.Since(back) > 3*refresh {
			t.Fatalf("%d peers still unreachable %v after Redis came back", left, 3*refresh)
		}
		for i, p := range peers {
			if reachable[i] {
				continue
			}
			cctx, ccancel := context.WithTimeout(ctx, 500*time.Millisecond)
			err := connect(cctx, peers[(i+1)%len(peers)], p)
			ccancel()
			if err == nil {
				reachable[i] = true
				left--
			} else if !errors.Is(err, rzclient.ErrPeerNotFound) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, rzclient.ErrNoAnswer) {
				t.Fatalf("peer %d after Redis came back: %v", i, err)
			}
		}
		all = time.Since(back)
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("Redis back: every peer registered and reachable %v later (refresh %v, peer backoff cap 1 s)", all.Round(time.Millisecond), refresh)
	if all > refresh+time.Second+500*time.Millisecond {
		t.Errorf("recovery took %v, want within one refresh interval plus the peers' backoff", all)
	}

	// Never restarted, never panicked, and still stops cleanly.
	for _, in := range g.instances {
		if !in.running() || in.cmd.Process.Pid != pids[in.name] {
			t.Fatalf("%s is not the process that ran before the outage", in.name)
		}
		if s := in.stderr.String(); strings.Contains(s, "panic") || strings.Contains(s, "goroutine ") {
			t.Errorf("%s stderr shows a panic:\n%s", in.name, tail(s, 30))
		}
		if err := in.stop(5 * time.Second); err != nil {
			t.Errorf("%s exit after SIGTERM: %v, want status 0", in.name, err)
		}
	}
}

// stunCheck sends a STUN Binding request from a fresh socket and checks the
// XOR-MAPPED-ADDRESS names that socket.
func stunCheck(t *testing.T, server netip.AddrPort) {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	buf := make([]byte, 1500)
	for try := 0; try < 3; try++ {
		if _, err := c.WriteToUDPAddrPort(req.Raw, server); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			continue
		}
		var res stun.Message
		res.Raw = buf[:n]
		var xor stun.XORMappedAddress
		if err := res.Decode(); err != nil || res.TransactionID != req.TransactionID || xor.GetFrom(&res) != nil {
			t.Fatalf("bad STUN answer: %v", err)
		}
		if got, want := xor.String(), c.LocalAddr().String(); got != want {
			t.Fatalf("STUN says %s, want %s", got, want)
		}
		return
	}
	t.Fatalf("no STUN answer from %v while Redis is down", server)
}

// reLine compiles a pattern for waitOutput.
func reLine(pattern string) *regexp.Regexp { return regexp.MustCompile(pattern) }

// grepLine returns the first line of s containing sub.
func grepLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
