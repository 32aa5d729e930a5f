package overlay_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/overlay"
	"github.com/keymesh/keymesh/internal/testutil/meshtest"
	"github.com/keymesh/keymesh/node"
)

// startStack runs n's userspace stack until the test ends.
func startStack(t *testing.T, n *node.Node, policy overlay.Policy) *overlay.Stack {
	t.Helper()
	s, err := overlay.NewStack(overlay.Config{Transport: n, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("stack: %v", err)
		}
	})
	return s
}

// udpPacket builds an IPv6 UDP packet (checksum left 0: the router does not
// look at it).
func udpPacket(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	p := make([]byte, 40+8+len(payload))
	p[0] = 6 << 4
	binary.BigEndian.PutUint16(p[4:6], uint16(8+len(payload)))
	p[6] = overlay.ProtoUDP
	p[7] = 64
	s, d := src.As16(), dst.As16()
	copy(p[8:24], s[:])
	copy(p[24:40], d[:])
	binary.BigEndian.PutUint16(p[40:42], sport)
	binary.BigEndian.PutUint16(p[42:44], dport)
	binary.BigEndian.PutUint16(p[44:46], uint16(8+len(payload)))
	copy(p[48:], payload)
	return p
}

func waitStats(t *testing.T, r *overlay.Router, what string, cond func(overlay.Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond(r.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; stats %+v", what, r.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A peer that sends a packet with another peer's source address (a forged
// source) has it dropped and counted; the same packet with its own source
// is delivered.
func TestForgedSourceDropped(t *testing.T) {
	srv := meshtest.Start(t)
	a, b := meshtest.Node(t, srv), meshtest.Node(t, srv)
	bs := startStack(t, b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := a.Connect(ctx, b.OverlayAddr().String()); err != nil {
		t.Fatal(err)
	}
	victim := meshtest.Node(t, srv).OverlayAddr()
	forged := udpPacket(victim, b.OverlayAddr(), 1000, 2000, []byte("forged"))
	for i := 0; i < 3; i++ {
		if err := a.SendPacket(b.OverlayAddr(), forged); err != nil {
			t.Fatal(err)
		}
	}
	waitStats(t, bs.Router, "3 spoofed packets counted", func(s overlay.Stats) bool { return s.Spoofed == 3 })
	if st := bs.Router.Stats(); st.Received != 0 {
		t.Fatalf("a forged packet reached the stack: %+v", st)
	}
	// The same packet with A's own source address is delivered to the
	// stack's UDP listener.
	l, err := bs.ListenUDPAddrPort(netip.AddrPortFrom(b.OverlayAddr(), 2000))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ok := udpPacket(a.OverlayAddr(), b.OverlayAddr(), 1000, 2000, []byte("genuine"))
	// The stack checks UDP checksums; a zero checksum is invalid in IPv6,
	// so count delivery at the router rather than the socket.
	if err := a.SendPacket(b.OverlayAddr(), ok); err != nil {
		t.Fatal(err)
	}
	waitStats(t, bs.Router, "the genuine packet delivered", func(s overlay.Stats) bool { return s.Received == 1 })
	if st := bs.Router.Stats(); st.Spoofed != 3 {
		t.Fatalf("spoofed = %d, want 3", st.Spoofed)
	}
}

// A packet to a port the policy refuses is dropped and counted; replies to
// flows the receiving side opened pass without the policy.
func TestPolicyRefusesPort(t *testing.T) {
	srv := meshtest.Start(t)
	a, b := meshtest.Node(t, srv), meshtest.Node(t, srv)
	as := startStack(t, a, nil)
	bs := startStack(t, b, func(src, dst netip.AddrPort, proto uint8) bool {
		return proto == overlay.ProtoTCP && dst.Port() == 80
	})
	ln, err := bs.ListenTCPAddrPort(netip.AddrPortFrom(b.OverlayAddr(), 80))
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") }))
	defer ln.Close()
	if _, err := bs.ListenTCPAddrPort(netip.AddrPortFrom(b.OverlayAddr(), 81)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if got := httpGet(ctx, t, as, netip.AddrPortFrom(b.OverlayAddr(), 80)); got != "hello" {
		t.Fatalf("GET = %q", got)
	}
	dctx, dcancel := context.WithTimeout(ctx, 3*time.Second)
	defer dcancel()
	if c, err := as.DialContextTCPAddrPort(dctx, netip.AddrPortFrom(b.OverlayAddr(), 81)); err == nil {
		c.Close()
		t.Fatal("connected to port 81, which the policy refuses")
	}
	if st := bs.Router.Stats(); st.Refused == 0 {
		t.Fatalf("no refused packet counted: %+v", st)
	}
}

func httpGet(ctx context.Context, t *testing.T, s *overlay.Stack, to netip.AddrPort) string {
	t.Helper()
	cl := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return s.DialContextTCPAddrPort(ctx, to)
	}}}
	var last error
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+to.String()+"/", nil)
		resp, err := cl.Do(req)
		if err != nil {
			last = err
			time.Sleep(100 * time.Millisecond) // the session is being set up
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(b)
	}
	t.Fatalf("GET %s: %v", to, last)
	return ""
}

// UDP between two userspace stacks: a round trip of datagrams.
func TestUDPRoundTrip(t *testing.T) {
	srv := meshtest.Start(t)
	a, b := meshtest.Node(t, srv), meshtest.Node(t, srv)
	as, bs := startStack(t, a, nil), startStack(t, b, nil)
	echo, err := bs.ListenUDPAddrPort(netip.AddrPortFrom(b.OverlayAddr(), 7))
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2000)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(buf[:n], from)
		}
	}()
	c, err := as.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(b.OverlayAddr(), 7))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2000)
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; ; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no echo; stats a %+v b %+v", as.Router.Stats(), bs.Router.Stats())
		}
		msg := []byte(fmt.Sprintf("ping %d", i))
		c.Write(msg)
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil && bytes.Equal(buf[:n], msg) {
			return
		}
	}
}

// Every session carries a packet of MinMTU bytes, the device's MTU, in one
// datagram; a larger one than a datagram holds is refused with its limit.
func TestDatagramCarriesMinMTU(t *testing.T) {
	srv := meshtest.Start(t)
	a, b := meshtest.Node(t, srv), meshtest.Node(t, srv)
	bs := startStack(t, b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := a.Connect(ctx, b.OverlayAddr().String()); err != nil {
		t.Fatal(err)
	}
	full := udpPacket(a.OverlayAddr(), b.OverlayAddr(), 1, 2, make([]byte, overlay.MinMTU-48))
	if err := a.SendPacket(b.OverlayAddr(), full); err != nil {
		t.Fatalf("a %d-byte packet: %v", len(full), err)
	}
	waitStats(t, bs.Router, "the full-size packet delivered", func(s overlay.Stats) bool { return s.Received == 1 })
	huge := udpPacket(a.OverlayAddr(), b.OverlayAddr(), 1, 2, make([]byte, 1500))
	var big *node.TooBigError
	if err := a.SendPacket(b.OverlayAddr(), huge); !errors.As(err, &big) || big.Max < overlay.MinMTU {
		t.Fatalf("a %d-byte packet: %v, want a TooBigError with a limit of at least %d", len(huge), err, overlay.MinMTU)
	}
	t.Logf("a datagram carries at most %d bytes", big.Max)
}
