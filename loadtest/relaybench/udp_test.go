package relaybench

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/keymesh/keymesh/internal/udpoffload"
)

// TestSegmentedFlowsSendRuns asserts that a segmented step sends each
// flow's datagrams as runs of the segment count: a receiver with UDP_GRO
// reads whole runs of same-size datagrams, and every datagram is counted.
func TestSegmentedFlowsSendRuns(t *testing.T) {
	dst, err := listenLoopback()
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if !enableGRO(dst) {
		t.Fatal("UDP_GRO refused: the receivers read as keymesh peers do, with it")
	}
	u, err := newUDPFlows(net.IPv4(127, 0, 0, 1), 2, 32, dst.LocalAddr().(*net.UDPAddr), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer u.close()
	const size, seg = 1000, 8
	u.frames = [][]byte{make([]byte, size), make([]byte, size)}
	u.setSegment(seg)

	// Read on: one datagram per read slot, or one run under GRO.
	type run struct{ n, segSize int }
	runs := make(chan run, 1024)
	go func() {
		pc := ipv4.NewPacketConn(dst)
		msgs := []ipv4.Message{{Buffers: [][]byte{make([]byte, 1<<16)}, OOB: make([]byte, 64)}}
		for {
			if _, err := pc.ReadBatch(msgs, 0); err != nil {
				close(runs)
				return
			}
			runs <- run{msgs[0].N, udpoffload.GROSize(msgs[0].OOB[:msgs[0].NN])}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// 4000 packets/s for 200 ms: 800 datagrams, 100 runs of 8.
	r, err := u.step(ctx, 4000, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.sent != 800 {
		t.Fatalf("sent %d datagrams, want 800", r.sent)
	}
	var got, whole int
	for got < int(r.sent) {
		select {
		case x := <-runs:
			n := 1
			if x.segSize > 0 {
				if x.segSize != size || x.n%size != 0 {
					t.Fatalf("a run of %d bytes in %d-byte segments, want %d-byte datagrams", x.n, x.segSize, size)
				}
				n = x.n / size
			} else if x.n != size {
				t.Fatalf("a datagram of %d bytes, want %d", x.n, size)
			}
			if n == seg {
				whole++
			}
			got += n
		case <-ctx.Done():
			t.Fatalf("received %d of %d datagrams", got, r.sent)
		}
	}
	if got != int(r.sent) || whole == 0 {
		t.Fatalf("received %d datagrams of %d sent, %d whole runs of %d: want all, in runs", got, r.sent, whole, seg)
	}
}

// TestSinksCountEachDatagramOfARun asserts that a receiver counts every
// datagram of a run that arrives coalesced, at the payload offset.
func TestSinksCountEachDatagramOfARun(t *testing.T) {
	sk, err := openSinks(1)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	sk.run(rec, 4)
	defer sk.close()
	u, err := newUDPFlows(net.IPv4(127, 0, 0, 1), 1, 32, sk.addr(0), 4)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { u.sinks = nil; u.close() }()
	u.rec = rec
	u.frames = [][]byte{make([]byte, 4+1200)}
	u.setSegment(16)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := u.step(ctx, 8000, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.sent != 1600 || r.received != r.sent {
		t.Fatalf("sent %d, received %d: want 1600 both", r.sent, r.received)
	}
}
