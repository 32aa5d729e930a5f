package turnrelay

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"
)

// batchFixture is a relayed socket and two peers on loopback.
type batchFixture struct {
	relay *net.UDPConn
	sock  *relaySock
	peers [2]*net.UDPConn
}

func newBatchFixture(t *testing.T) *batchFixture {
	t.Helper()
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	f := &batchFixture{relay: listen()}
	f.peers[0], f.peers[1] = listen(), listen()
	if f.sock = newRelaySock(f.relay); f.sock == nil {
		t.Fatal("newRelaySock: nil for a UDP socket")
	}
	return f
}

func (f *batchFixture) peer(i int) netip.AddrPort {
	return f.peers[i].LocalAddr().(*net.UDPAddr).AddrPort()
}

// expect reads peer i's next datagrams, one read each, and checks them.
func (f *batchFixture) expect(t *testing.T, i int, want ...[]byte) {
	t.Helper()
	buf := make([]byte, 70000)
	for k, w := range want {
		f.peers[i].SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := f.peers[i].ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("peer %d, datagram %d: %v", i, k, err)
		}
		if !bytes.Equal(buf[:n], w) {
			t.Fatalf("peer %d, datagram %d: got %d bytes %q..., want %d bytes %q...", i, k, n, buf[:min(n, 8)], len(w), w[:min(len(w), 8)])
		}
	}
}

func payload(tag byte, n int) []byte { return bytes.Repeat([]byte{tag}, n) }

// TestBatchWriterSegmentsRuns: consecutive same-size datagrams to one peer
// through one socket go as one segmented message, a shorter one ends the
// run, and every peer still gets each datagram whole, on its own and in
// order.
func TestBatchWriterSegmentsRuns(t *testing.T) {
	f := newBatchFixture(t)
	w := newBatchWriter()
	a, b := f.peer(0), f.peer(1)
	sends := []struct {
		p   []byte
		dst netip.AddrPort
	}{
		{payload('a', 100), a}, {payload('b', 100), a}, {payload('c', 100), a}, {payload('d', 60), a},
		{payload('e', 100), a}, // the run above ended with a shorter one
		{payload('f', 100), b}, {payload('g', 100), b},
		{payload('h', 100), a},
		{payload('i', 200), a}, // larger than the run's segments
	}
	for _, s := range sends {
		if !w.add(f.sock, s.p, s.dst) {
			t.Fatalf("add to %v refused", s.dst)
		}
	}
	if f.sock.noGSO.Load() {
		t.Fatal("the relayed socket takes no UDP_SEGMENT (Linux has had it since 4.18)")
	}
	if w.n != 5 {
		t.Errorf("queued %d messages for %d datagrams, want 5 (runs joined)", w.n, len(sends))
	}
	if failed := w.flush(); failed != 0 {
		t.Fatalf("flush: %d failed", failed)
	}
	if w.n != 0 || w.nio != 0 {
		t.Fatalf("after flush: %d messages, %d buffers queued", w.n, w.nio)
	}
	f.expect(t, 0, sends[0].p, sends[1].p, sends[2].p, sends[3].p, sends[4].p, sends[7].p, sends[8].p)
	f.expect(t, 1, sends[5].p, sends[6].p)
}

// TestBatchWriterUnsegment: a segmented message sent again one datagram
// at a time (what flush does when the kernel refuses it) reaches the peer
// as the same datagrams.
func TestBatchWriterUnsegment(t *testing.T) {
	f := newBatchFixture(t)
	w := newBatchWriter()
	want := [][]byte{payload('x', 300), payload('y', 300), payload('z', 10)}
	for _, p := range want {
		w.add(f.sock, p, f.peer(0))
	}
	if failed := w.unsegment(0); failed != 0 {
		t.Fatalf("unsegment: %d failed", failed)
	}
	f.expect(t, 0, want...)
}

// TestBatchWriterNoAllocations: queueing and sending a batch allocates
// nothing.
func TestBatchWriterNoAllocations(t *testing.T) {
	f := newBatchFixture(t)
	w := newBatchWriter()
	p, q := payload('p', 1200), payload('q', 1200)
	a, b := f.peer(0), f.peer(1)
	allocs := testing.AllocsPerRun(100, func() {
		w.add(f.sock, p, a)
		w.add(f.sock, q, a)
		w.add(f.sock, p, b)
		w.flush()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch, want 0", allocs)
	}
}
