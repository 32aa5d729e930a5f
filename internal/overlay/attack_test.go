package overlay_test

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/keymesh/keymesh/internal/overlay"
	"github.com/keymesh/keymesh/node"
)

// fakeTransport is a Transport whose sessions never come up: SendPacket
// answers ErrNoSession and Connect waits for release.
type fakeTransport struct {
	me       netip.Addr
	handler  atomic.Pointer[func(netip.Addr, []byte)]
	release  chan struct{}
	mu       sync.Mutex
	inflight int
	maxSeen  int
	total    int
}

func (f *fakeTransport) OverlayAddr() netip.Addr                  { return f.me }
func (f *fakeTransport) SendPacket(netip.Addr, []byte) error      { return node.ErrNoSession }
func (f *fakeTransport) HandlePackets(h func(netip.Addr, []byte)) { f.handler.Store(&h) }
func (f *fakeTransport) Connect(ctx context.Context, _ string) error {
	f.mu.Lock()
	f.inflight++
	f.total++
	f.maxSeen = max(f.maxSeen, f.inflight)
	f.mu.Unlock()
	select {
	case <-f.release:
	case <-ctx.Done():
	}
	f.mu.Lock()
	f.inflight--
	f.mu.Unlock()
	return context.Canceled
}

func runRouter(t *testing.T, cfg overlay.Config) *overlay.Router {
	t.Helper()
	r, err := overlay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return r
}

func addr(i int) netip.Addr {
	a := netip.MustParseAddr("fd4b::").As16()
	a[14], a[15] = byte(i>>8), byte(i)
	return netip.AddrFrom16(a)
}

// A peer that floods packets faster than the device takes them fills a
// bounded queue; the rest are dropped and counted, nothing grows.
func TestFloodQueueBounded(t *testing.T) {
	me, peer := addr(1), addr(2)
	ch := tuntest.NewChannelTUN() // nobody reads ch.Inbound: the device is stuck
	ft := &fakeTransport{me: me, release: make(chan struct{})}
	r := runRouter(t, overlay.Config{Device: ch.TUN(), Transport: ft, Queue: 64})
	for ft.handler.Load() == nil {
		time.Sleep(time.Millisecond)
	}
	h := *ft.handler.Load()
	const flood = 10000
	pkt := udpPacket(peer, me, 1, 2, []byte("flood"))
	for range flood {
		h(peer, pkt)
	}
	st := r.Stats()
	// The queue holds 64, the writer holds at most one batch (8) while
	// blocked on the device.
	if st.Received > 64+8+1 || st.Received+st.QueueFull != flood {
		t.Fatalf("after %d packets: received %d, queue_full %d; want at most 73 received and the rest counted", flood, st.Received, st.QueueFull)
	}
	// Once the device drains, packets flow again.
	go func() {
		for range ch.Inbound {
		}
	}()
	waitStats(t, r, "a packet after the flood", func(s overlay.Stats) bool {
		h(peer, pkt)
		return s.Received > st.Received
	})
}

// Packets to many new destinations start at most MaxDials session set-ups
// at once; the rest are dropped and counted.
func TestNewDestinationsBoundDials(t *testing.T) {
	me := addr(1)
	ch := tuntest.NewChannelTUN()
	ft := &fakeTransport{me: me, release: make(chan struct{})}
	r := runRouter(t, overlay.Config{Device: ch.TUN(), Transport: ft, MaxDials: 4})
	const n = 500
	for i := range n {
		ch.Outbound <- udpPacket(me, addr(1000+i), 1, 2, []byte("x"))
	}
	waitStats(t, r, "every packet counted", func(s overlay.Stats) bool { return s.NoSession == n })
	// The router takes a dial's slot before it starts the dial's
	// goroutine: the last of them may not have reached Connect yet.
	var total, maxSeen int
	for deadline := time.Now().Add(5 * time.Second); ; {
		ft.mu.Lock()
		total, maxSeen = ft.total, ft.maxSeen
		ft.mu.Unlock()
		if total >= 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(ft.release)
	if total != 4 || maxSeen != 4 {
		t.Fatalf("%d set-ups started, %d at once; want 4 and 4", total, maxSeen)
	}
}

// Packets the kernel sends that are not for a peer (another source, a
// destination outside the overlay) never reach the transport.
func TestLocalPacketsStayLocal(t *testing.T) {
	me := addr(1)
	ch := tuntest.NewChannelTUN()
	ft := &fakeTransport{me: me, release: make(chan struct{})}
	r := runRouter(t, overlay.Config{Device: ch.TUN(), Transport: ft})
	ch.Outbound <- udpPacket(netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::2"), 1, 2, nil)
	ch.Outbound <- udpPacket(me, netip.MustParseAddr("2001:db8::1"), 1, 2, nil)
	ch.Outbound <- udpPacket(addr(7), addr(8), 1, 2, nil)
	waitStats(t, r, "3 local packets", func(s overlay.Stats) bool { return s.Local == 3 })
	close(ft.release)
	if st := r.Stats(); st.NoSession != 0 || st.Sent != 0 {
		t.Fatalf("local packets went to the transport: %+v", st)
	}
}
