package throughput

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"200MB": 200e6, "1GiB": 1 << 30, "5000": 5000, "1.5 kb": 1500, "64KiB": 64 << 10} {
		got, err := parseBytes(in)
		if err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MB", "-1MB", "lots"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) accepted", bad)
		}
	}
}

func TestParseThroughputFlags(t *testing.T) {
	o, err := parseThroughputFlags([]string{"--bytes", "10MB", "--runs", "3", "--only", "raw-udp,keymesh-relay"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.bytes != 10e6 || o.runs != 3 || len(o.only) != 2 {
		t.Fatalf("%+v", o)
	}
	for _, args := range [][]string{{"--runs", "0"}, {"--only", "carrier-pigeon"}, {"--bytes", "x"}, {"extra"}} {
		if _, err := parseThroughputFlags(args, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// TestThroughputSmall runs every scenario with a few megabytes and checks
// the table.
func TestThroughputSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out bytes.Buffer
	rows, md, err := throughput(ctx, tpOpts{bytes: 4 << 20, runs: 1, timeout: 30 * time.Second}, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	table := out.String()
	if !strings.Contains(table, md) || len(rows) != len(tpNames()) {
		t.Errorf("recorded %d rows and Markdown %q; printed:\n%s", len(rows), md, table)
	}
	for _, name := range tpNames() {
		if !strings.Contains(table, "| "+name+" |") {
			t.Errorf("no row for %s:\n%s", name, table)
		}
	}
	if !strings.Contains(table, "| keymesh-direct | node stream, path layer, direct path | 4.0 MiB |") {
		t.Errorf("direct scenario did not deliver everything:\n%s", table)
	}
}

// TestThroughputPipeShort runs --pipe with a few megabytes between real
// rendezvous, relay and peer processes and checks that each path moved
// every byte over the path it names and that the table carries the ratio.
func TestThroughputPipeShort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	rep, md, err := throughputPipe(ctx, tpOpts{bytes: 8 << 20, runs: 1, timeout: time.Minute, pipe: true}, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 2 || rep.Direct.Path != "direct" || rep.Relay.Path != "relay" {
		t.Fatalf("runs: %+v", rep.Runs)
	}
	for _, r := range rep.Runs {
		if r.Bytes != 8<<20 || r.MBps <= 0 {
			t.Errorf("%s: %d bytes at %.1f MB/s, want all %d", r.Path, r.Bytes, r.MBps, 8<<20)
		}
	}
	if want := fmt.Sprintf("| %.2f |", rep.Ratio); !strings.Contains(md, want) || !strings.Contains(out.String(), md) {
		t.Errorf("table lacks the ratio %s or was not printed:\n%s", want, md)
	}
}

func TestParseThroughputPipeFlags(t *testing.T) {
	o, err := parseThroughputFlags([]string{"--pipe", "--bin", "/x", "--runs", "3"}, io.Discard)
	if err != nil || !o.pipe || o.bin != "/x" || o.runs != 3 {
		t.Fatalf("%+v %v", o, err)
	}
	if _, err := parseThroughputFlags([]string{"--pipe", "--only", "raw-udp"}, io.Discard); err == nil {
		t.Error("--pipe with --only accepted")
	}
	if o, err := parseThroughputFlags([]string{"--record", "docs/results/x"}, io.Discard); err != nil || o.record != "docs/results/x" {
		t.Errorf("--record for the in-process scenarios: %+v %v", o, err)
	}
}

// TestUDPDropsCountsFullBuffers overflows a small receive buffer of this
// process and checks that udpDrops sees the drops.
func TestUDPDropsCountsFullBuffers(t *testing.T) {
	rx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	if err := rx.SetReadBuffer(1); err != nil { // the kernel's minimum
		t.Fatal(err)
	}
	tx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	before := udpDrops(os.Getpid())
	if before < 0 {
		t.Fatal("cannot read this process's UDP drops")
	}
	for range 200 {
		if _, err := tx.WriteTo(make([]byte, 1200), rx.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	if got := udpDrops(os.Getpid()) - before; got < 100 {
		t.Fatalf("udpDrops saw %d drops after 200 datagrams into a minimal buffer, want most of them", got)
	}
}
