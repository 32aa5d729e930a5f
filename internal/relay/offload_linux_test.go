package relay

import (
	"bytes"
	"fmt"
	"github.com/keymesh/keymesh/internal/udpoffload"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/testutil/ci"
	"github.com/keymesh/keymesh/internal/wire"
)

// These tests send as keymesh peers do on Linux: a run of same-size
// RelaySend frames in one segmented send (UDP_SEGMENT), which the relay
// reads whole with UDP_GRO. Each run's frames must still pass every
// per-datagram check.

// sendRun sends frames from p to the relay in one segmented send; all but
// the last must be of one size.
func sendRun(t *testing.T, p *peer, to *net.UDPAddr, frames [][]byte) {
	t.Helper()
	var buf []byte
	for _, f := range frames {
		buf = append(buf, f...)
	}
	oob := make([]byte, unix.CmsgSpace(2))
	udpoffload.PutGSO(oob, len(frames[0]))
	if _, _, err := p.conn.WriteMsgUDP(buf, oob, to); err != nil {
		t.Fatalf("segmented send (UDP_SEGMENT): %v", err)
	}
}

// enableGRO turns on receive offload at p, so that a segmented run the
// relay sends arrives in one read.
func enableGRO(t testing.TB, p *peer) {
	t.Helper()
	rc, err := p.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatalf("UDP_GRO: %v", serr)
	}
}

// recvFrames reads from p (with receive offload on) until want datagrams
// arrived or nothing more comes, splitting coalesced reads; it returns the
// datagrams and how many reads they took.
func recvFrames(t *testing.T, p *peer, want int) (frames [][]byte, reads int) {
	t.Helper()
	buf := make([]byte, 1<<16)
	oob := make([]byte, 128)
	for len(frames) < want {
		p.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, oobn, _, _, err := p.conn.ReadMsgUDP(buf, oob)
		if err != nil {
			break
		}
		reads++
		seg := udpoffload.GROSize(oob[:oobn])
		if seg <= 0 {
			seg = n
		}
		for off := 0; off < n; off += seg {
			frames = append(frames, slices.Clone(buf[off:min(off+seg, n)]))
		}
	}
	p.conn.SetReadDeadline(time.Time{})
	return frames, reads
}

// sameSize makes a RelaySend whose payload is label padded to 1000 bytes.
func sameSize(ticket []byte, p *peer, label string) []byte {
	return relaySend(ticket, p, fmt.Sprintf("%-1000s", label))
}

// checkPayloads checks that frames are Relayed frames from p carrying
// labels, in order.
func checkPayloads(t *testing.T, frames [][]byte, from *peer, labels []string) {
	t.Helper()
	if len(frames) != len(labels) {
		t.Fatalf("%d frames arrived, want %d", len(frames), len(labels))
	}
	for i, f := range frames {
		tag, pl, err := wire.ParseData(f)
		if err != nil || f[0] != wire.TypeRelayed || tag != from.id.ID().Tag() {
			t.Fatalf("frame %d: %v, type %#x, tag %x", i, err, f[0], tag)
		}
		if got := string(pl); got != fmt.Sprintf("%-1000s", labels[i]) {
			t.Fatalf("frame %d carries %.12q, want %q", i, got, labels[i])
		}
	}
}

func TestSegmentedRunOpensTicketOnceAndLeavesSegmented(t *testing.T) {
	keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)
	r := startRelay(t, Config{Keys: keys}, "batch", "127.0.0.1:0")
	a, b := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0")
	ticket := b.bind(t, r.addr).Ticket
	enableGRO(t, b)

	const n = 32
	var frames [][]byte
	var labels []string
	for i := range n {
		labels = append(labels, fmt.Sprintf("run %d", i))
		frames = append(frames, sameSize(ticket, a, labels[i]))
	}
	sendRun(t, a, r.addr, frames)
	got, reads := recvFrames(t, b, n)
	checkPayloads(t, got, a, labels)
	if reads >= n {
		t.Errorf("the run took %d reads at the recipient, want it segmented (fewer reads than its %d datagrams)", reads, n)
	}
	waitMetrics(t, r.admin, map[string]float64{
		"keymesh_relay_forwarded_packets_total": n,
		"keymesh_relay_ticket_opens_total":      1,
	})
}

func TestSegmentedRunChecksEveryDatagram(t *testing.T) {
	t.Run("forged ticket inside a run", func(t *testing.T) {
		keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)
		r := startRelay(t, Config{Keys: keys}, "batch", "127.0.0.1:0")
		a, b := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0")
		ticket := b.bind(t, r.addr).Ticket
		enableGRO(t, b)
		var frames [][]byte
		var labels []string
		for i := range 9 {
			f := sameSize(ticket, a, fmt.Sprintf("f%d", i))
			if i == 4 {
				f[wire.HeaderLen+60] ^= 1 // same size, forged ticket
			} else {
				labels = append(labels, fmt.Sprintf("f%d", i))
			}
			frames = append(frames, f)
		}
		sendRun(t, a, r.addr, frames)
		got, _ := recvFrames(t, b, len(labels))
		checkPayloads(t, got, a, labels)
		waitMetrics(t, r.admin, map[string]float64{
			"keymesh_relay_forwarded_packets_total":       8,
			"keymesh_relay_dropped_packets_total{forged}": 1,
			"keymesh_relay_ticket_opens_total":            2, // the good ticket once, the forged one
		})
	})
	t.Run("rate limit inside a run", func(t *testing.T) {
		clk := newClock() // frozen: the bucket does not refill
		keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)
		r := startRelay(t, Config{Keys: keys, Now: clk.Now, RateLimit: RateLimit{Rate: 10, Burst: 5}}, "batch", "127.0.0.1:0")
		a, b := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0")
		ticket := b.bind(t, r.addr).Ticket
		enableGRO(t, b)
		var frames [][]byte
		for i := range 20 {
			frames = append(frames, sameSize(ticket, a, fmt.Sprintf("r%d", i)))
		}
		sendRun(t, a, r.addr, frames)
		got, _ := recvFrames(t, b, 6)
		checkPayloads(t, got, a, []string{"r0", "r1", "r2", "r3", "r4"})
		waitMetrics(t, r.admin, map[string]float64{
			"keymesh_relay_forwarded_packets_total":             5,
			"keymesh_relay_dropped_packets_total{rate_limited}": 15,
		})
	})
	t.Run("a run pays the rate of each datagram once", func(t *testing.T) {
		// Burst 20, two runs of 16 to one recipient: the first run is
		// charged at once, the second pays one by one and 4 pass: what
		// 32 datagrams charged one at a time would get.
		clk := newClock()
		keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)
		r := startRelay(t, Config{Keys: keys, Now: clk.Now, RateLimit: RateLimit{Rate: 10, Burst: 20}}, "batch", "127.0.0.1:0")
		a, b := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0")
		ticket := b.bind(t, r.addr).Ticket
		enableGRO(t, b)
		var labels []string
		for run := range 2 {
			var frames [][]byte
			for i := range 16 {
				l := fmt.Sprintf("r%d-%d", run, i)
				frames = append(frames, sameSize(ticket, a, l))
				if run == 0 || i < 4 {
					labels = append(labels, l)
				}
			}
			sendRun(t, a, r.addr, frames)
			waitMetrics(t, r.admin, map[string]float64{"keymesh_relay_received_packets_total": float64(16*(run+1)) + 2}) // and the bind's two
		}
		got, _ := recvFrames(t, b, len(labels))
		checkPayloads(t, got, a, labels)
		waitMetrics(t, r.admin, map[string]float64{
			"keymesh_relay_forwarded_packets_total":             20,
			"keymesh_relay_dropped_packets_total{rate_limited}": 12,
		})
	})
	t.Run("a run to two recipients pays one by one", func(t *testing.T) {
		// Burst 12 per pair (a pair is two addresses, so c has one of its
		// own); 8 datagrams to b and 4 to c interleaved in one run: were
		// the run's rest charged at each change of recipient, b's pair
		// would pay 12 + 9 and refuse.
		clk := newClock()
		keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)
		r := startRelay(t, Config{Keys: keys, Now: clk.Now, RateLimit: RateLimit{Rate: 10, Burst: 12}}, "batch", "127.0.0.1:0")
		a, b, c := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.2:0")
		tb, tc := b.bind(t, r.addr).Ticket, c.bind(t, r.addr).Ticket
		enableGRO(t, b)
		enableGRO(t, c)
		var frames [][]byte
		for i := range 12 {
			if i%3 == 2 {
				frames = append(frames, sameSize(tc, a, fmt.Sprintf("c%d", i)))
			} else {
				frames = append(frames, sameSize(tb, a, fmt.Sprintf("b%d", i)))
			}
		}
		sendRun(t, a, r.addr, frames)
		waitMetrics(t, r.admin, map[string]float64{"keymesh_relay_forwarded_packets_total": 12})
	})
	t.Run("two recipients in one run", func(t *testing.T) {
		keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)
		r := startRelay(t, Config{Keys: keys}, "batch", "127.0.0.1:0")
		a, b, c := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0")
		tb, tc := b.bind(t, r.addr).Ticket, c.bind(t, r.addr).Ticket
		enableGRO(t, b)
		enableGRO(t, c)
		var frames [][]byte
		var lb, lc []string
		for i := range 12 {
			if i%3 == 2 {
				lc = append(lc, fmt.Sprintf("c%d", i))
				frames = append(frames, sameSize(tc, a, lc[len(lc)-1]))
			} else {
				lb = append(lb, fmt.Sprintf("b%d", i))
				frames = append(frames, sameSize(tb, a, lb[len(lb)-1]))
			}
		}
		sendRun(t, a, r.addr, frames)
		gb, _ := recvFrames(t, b, len(lb))
		gc, _ := recvFrames(t, c, len(lc))
		checkPayloads(t, gb, a, lb)
		checkPayloads(t, gc, a, lc)
	})
}

// TestBatchPathDoesNotAllocate reads a segmented run and forwards it
// segmented, through the same code Serve runs, and counts allocations.
func TestBatchPathDoesNotAllocate(t *testing.T) {
	keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)
	s, err := New(Config{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	relayConn := newPeer(t, "127.0.0.1:0").conn
	m, err := newMmsg(relayConn, DefaultBatch)
	if err != nil {
		t.Fatal(err)
	}
	if !m.gro || !m.gso {
		t.Fatalf("this kernel lacks UDP_GRO (%v) or UDP_SEGMENT (%v), which the relay's fast path uses", m.gro, m.gso)
	}
	w := s.newWorker()
	a, b := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0")
	ticket := keys.Seal(nil, crypto.Ticket{Addr: b.conn.LocalAddr().(*net.UDPAddr).AddrPort(), Expiry: time.Now().Add(time.Hour)})
	var frames [][]byte
	for i := range 32 {
		frames = append(frames, sameSize(ticket, a, fmt.Sprint(i)))
	}
	to := relayConn.LocalAddr().(*net.UDPAddr)
	round := func() uint64 {
		sendRun(t, a, to, frames)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		n, err := m.read()
		if err == nil {
			err = w.handleBatch(m, n)
		}
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := recvFrames(t, b, len(frames)); len(got) != len(frames) {
			t.Fatalf("%d of %d datagrams forwarded", len(got), len(frames))
		}
		return after.Mallocs - before.Mallocs
	}
	round() // the poller's first wait may allocate
	for range 3 {
		if allocs := round(); allocs != 0 {
			t.Fatalf("a segmented run of 32 cost %d allocations, want 0", allocs)
		}
	}
}

// threadCPU is the CPU time (user and system) of the calling OS thread.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRelayCPU is the relay's own CPU time per forwarded 1200-byte
// packet (its thread's user and system time: receive, ticket, send and the
// loopback delivery its sends do), for runs of 32 packets sent segmented,
// as keymesh peers send, and one datagram per send, as other clients do;
// "segmented-no-offload" turns the relay's UDP_GRO and UDP_SEGMENT off, as
// the relay was before it used them. One op is one run of 32.
func BenchmarkRelayCPU(b *testing.B) {
	b.Run("segmented", func(b *testing.B) { benchRelayCPU(b, true, true) })
	b.Run("segmented-no-offload", func(b *testing.B) { benchRelayCPU(b, true, false) })
	b.Run("one-by-one", func(b *testing.B) { benchRelayCPU(b, false, true) })
}

func benchRelayCPU(b *testing.B, segmented, offload bool) {
	keys := mustKeys(b, 1, map[byte][]byte{1: testKey(1)}, nil)
	s, err := New(Config{Keys: keys, RateLimit: RateLimit{Disabled: true}})
	if err != nil {
		b.Fatal(err)
	}
	relayConn := newPeer(b, "127.0.0.1:0").conn
	_ = relayConn.SetReadBuffer(4 << 20)
	m, err := newMmsg(relayConn, DefaultBatch)
	if err != nil {
		b.Fatal(err)
	}
	if !offload {
		rc, _ := relayConn.SyscallConn()
		_ = rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 0) })
		m.gro, m.gso = false, false
	}
	w := s.newWorker()
	a, sink := newPeer(b, "127.0.0.1:0"), newPeer(b, "127.0.0.1:0")
	_ = sink.conn.SetReadBuffer(4 << 20)
	ticket := keys.Seal(nil, crypto.Ticket{Addr: sink.conn.LocalAddr().(*net.UDPAddr).AddrPort(), Expiry: time.Now().Add(time.Hour)})
	const run = 32
	var frames [][]byte
	var joined []byte
	for i := range run {
		f := relaySend(ticket, a, fmt.Sprintf("%-1200d", i))
		frames = append(frames, f)
		joined = append(joined, f...)
	}
	oob := make([]byte, unix.CmsgSpace(2))
	udpoffload.PutGSO(oob, len(frames[0]))
	to := relayConn.LocalAddr().(*net.UDPAddr)

	// The sink counts what arrives and tells the sender each full run.
	got := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 1<<16)
		oob := make([]byte, 128)
		n := 0
		for {
			k, oobn, _, _, err := sink.conn.ReadMsgUDP(buf, oob)
			if err != nil {
				return
			}
			seg := udpoffload.GROSize(oob[:oobn])
			if seg <= 0 {
				seg = k
			}
			n += (k + seg - 1) / seg
			for n >= run {
				n -= run
				got <- struct{}{}
			}
		}
	}()
	enableGRO(b, sink)
	// The relay: one locked thread, whose CPU time is the relay's.
	cpu := make(chan time.Duration, 1)
	go func() {
		runtime.LockOSThread()
		start := threadCPU()
		for {
			n, err := m.read()
			if err != nil {
				cpu <- threadCPU() - start
				return
			}
			if err := w.handleBatch(m, n); err != nil {
				b.Error(err)
			}
		}
	}()
	b.ResetTimer()
	for range b.N {
		if segmented {
			if _, _, err := a.conn.WriteMsgUDP(joined, oob, to); err != nil {
				b.Fatal(err)
			}
		} else {
			for _, f := range frames {
				if _, err := a.conn.WriteToUDP(f, to); err != nil {
					b.Fatal(err)
				}
			}
		}
		select {
		case <-got:
		case <-time.After(2 * time.Second):
			b.Fatal("a run was lost")
		}
	}
	b.StopTimer()
	relayConn.SetReadDeadline(time.Unix(1, 0))
	b.ReportMetric(float64((<-cpu).Nanoseconds())/float64(b.N*run), "relay-cpu-ns/pkt")
}

// FuzzSendQueue queues forwards of arbitrary sizes to a few addresses,
// and replies, and checks every send message a batch would hand the
// kernel: a segmented one holds at most udpoffload.MaxSegs datagrams and udpoffload.MaxGSOBytes,
// all of its segment size but the last (which may be shorter), with the
// UDP_SEGMENT control message giving that size; and each address gets its
// datagrams in the order they were queued.
func FuzzSendQueue(f *testing.F) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	defer c.Close()
	m, err := newMmsg(c, 8)
	if err != nil {
		f.Fatal(err)
	}
	dsts := []netip.AddrPort{
		netip.MustParseAddrPort("127.0.0.1:1001"),
		netip.MustParseAddrPort("127.0.0.1:1002"),
		netip.MustParseAddrPort("[::1]:1003"),
	}
	const maxOps = 4096
	buf := make([]byte, maxOps+2048)
	f.Add([]byte{200, 0, 200, 0, 200, 0, 100, 0, 200, 0})
	f.Add([]byte{200, 0, 200, 1, 200, 0, 200, 1, 200, 3, 200, 0})
	f.Add(bytes.Repeat([]byte{255, 2}, 300))
	f.Fuzz(func(t *testing.T, ops []byte) {
		m.gso, m.v6 = true, false
		m.ns, m.nio = 0, 0
		next := map[netip.AddrPort]int{} // lowest sequence number each address may get next
		check := func() {
			for j := range m.ns {
				sm, h := &m.smeta[j], &m.shdr[j].Hdr
				if int(h.Iovlen) != sm.Segs || sm.Segs < 1 || sm.Segs > udpoffload.MaxSegs || sm.Bytes > udpoffload.MaxGSOBytes && sm.Segs > 1 {
					t.Fatalf("message %d: %d segments (iovlen %d), %d bytes", j, sm.Segs, h.Iovlen, sm.Bytes)
				}
				iovs := unsafe.Slice(h.Iov, sm.Segs)
				total := 0
				for k, iov := range iovs {
					l := int(iov.Len)
					total += l
					if l > sm.Size || l < sm.Size && k != len(iovs)-1 {
						t.Fatalf("message %d: segment %d of %d bytes with segment size %d", j, k, l, sm.Size)
					}
					if sm.act != actForward {
						continue
					}
					seq := int(uintptr(unsafe.Pointer(iov.Base)) - uintptr(unsafe.Pointer(&buf[0])))
					if seq < next[sm.dst] {
						t.Fatalf("%v got datagram %d after %d", sm.dst, seq, next[sm.dst])
					}
					next[sm.dst] = seq + 1
				}
				if total != sm.Bytes {
					t.Fatalf("message %d: %d bytes in its buffers, %d counted", j, total, sm.Bytes)
				}
				if sm.Segs > 1 {
					ctl := m.sctl[j*ctlSpace : j*ctlSpace+int(h.Controllen)]
					ch := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
					size := *(*uint16)(unsafe.Pointer(&ctl[unix.CmsgSpace(0)]))
					if h.Control != &ctl[0] || ch.Level != unix.IPPROTO_UDP || ch.Type != unix.UDP_SEGMENT || int(size) != sm.Size {
						t.Fatalf("message %d: control message %+v size %d, want UDP_SEGMENT %d", j, ch, size, sm.Size)
					}
				} else if h.Controllen != 0 {
					t.Fatalf("message %d: one datagram with a control message", j)
				}
			}
			m.ns, m.nio = 0, 0
		}
		for i := 0; i+1 < len(ops) && i/2 < maxOps; i += 2 {
			if m.full() {
				check()
			}
			seq := i / 2
			n := 1 + int(ops[i])*6
			out := buf[seq : seq+n]
			if d := int(ops[i+1]) % 4; d < len(dsts) {
				if !m.queue(actForward, out, dsts[d], 0) && dsts[d].Addr().Is4() {
					t.Fatalf("an IPv4 socket refused to queue for %v", dsts[d])
				}
			} else {
				m.queue(actReply, out, netip.AddrPort{}, 0)
			}
		}
		check()
	})
}

// TestSegmentedRunDualStack sends segmented runs through a dual-stack
// relay socket, IPv4 (v4-mapped there) to IPv6 and back.
func TestSegmentedRunDualStack(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		ci.Skipf(t, "no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)
	r := startRelay(t, Config{Keys: keys}, "batch", "[::]:0")
	to4 := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: r.addr.Port}
	to6 := &net.UDPAddr{IP: net.IPv6loopback, Port: r.addr.Port}
	v4, v6 := newPeer(t, "127.0.0.1:0"), newPeer(t, "[::1]:0")
	t4, t6 := v4.bind(t, to4).Ticket, v6.bind(t, to6).Ticket
	enableGRO(t, v4)
	enableGRO(t, v6)
	for _, c := range []struct {
		from, to *peer
		relay    *net.UDPAddr
		ticket   []byte
	}{{v4, v6, to4, t6}, {v6, v4, to6, t4}} {
		var frames [][]byte
		var labels []string
		for i := range 16 {
			labels = append(labels, fmt.Sprintf("ds %d", i))
			frames = append(frames, sameSize(c.ticket, c.from, labels[i]))
		}
		sendRun(t, c.from, c.relay, frames)
		got, _ := recvFrames(t, c.to, len(frames))
		checkPayloads(t, got, c.from, labels)
	}
}
