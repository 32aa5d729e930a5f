package main

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
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
	for _, want := range []string{"| registrations/s |", "| connects/s |", "| server heap per registered peer |"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, out.String())
		}
	}
	t.Logf("\n%s", out.String())
}

func TestPeersFlags(t *testing.T) {
	for _, args := range [][]string{
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
