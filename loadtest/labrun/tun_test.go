package labrun

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/internal/testutil/debpkg"
)

// overlayOf returns the overlay address of a peer ID.
func overlayOf(t *testing.T, id string) netip.Addr {
	t.Helper()
	p, err := crypto.ParsePeerID(id)
	if err != nil {
		t.Fatal(err)
	}
	return p.OverlayAddr()
}

// TestTUNHTTPAndUDP: two peers in TUN mode (`peer up --tun km0`), one
// behind a port-restricted NAT and one behind a symmetric NAT. curl in
// A's namespace fetches a page from an HTTP server listening on B's overlay
// address in B's namespace, and a UDP datagram to B's overlay address
// comes back echoed: unmodified programs, kernel sockets, no proxy. A
// also serves names on port 53 of its overlay address (--dns overlay):
// B's <peer-id>.keymesh resolves there to B's overlay address, and a name
// outside the suffix gets no address.
func TestTUNHTTPAndUDP(t *testing.T) {
	needRoot(t)
	curl := debpkg.Require(t, "curl", "curl")
	ctx := testContext(t, 90*time.Second)
	lab := startLab(t, ctx)
	_, _, a, b := aliceAndBob(t, ctx, lab, natlab.PortRestricted, natlab.Symmetric, PeerConfig{Args: []string{"--tun", "km0", "--dns", "overlay"}})
	bAddr := overlayOf(t, b.ID)

	// B: an HTTP server and a UDP echo on its overlay address.
	var ln net.Listener
	var echo net.PacketConn
	if err := b.Host.Do(func() error {
		var lc net.ListenConfig
		var err error
		// The TUN got its address a moment after registration at most.
		for i := 0; i < 50; i++ {
			if ln, err = lc.Listen(ctx, "tcp6", netip.AddrPortFrom(bAddr, 8080).String()); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			return err
		}
		echo, err = lc.ListenPacket(ctx, "udp6", netip.AddrPortFrom(bAddr, 9000).String())
		return err
	}); err != nil {
		t.Fatalf("listen on B's overlay address: %v", err)
	}
	defer ln.Close()
	defer echo.Close()
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from B to %s", r.RemoteAddr)
	})}
	go hs.Serve(ln)
	defer hs.Close()
	go func() {
		buf := make([]byte, 2000)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()

	// A: curl, retried while the session comes up.
	url := "http://" + netip.AddrPortFrom(bAddr, 8080).String() + "/"
	var body string
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := a.Host.Command(cctx, curl, "-sS", "-g", "--max-time", "4", url).CombinedOutput()
		cancel()
		if err == nil {
			body = string(out)
			break
		}
		t.Logf("curl %s: %v: %s (retrying)", url, err, strings.TrimSpace(string(out)))
		time.Sleep(200 * time.Millisecond)
	}
	aAddr := overlayOf(t, a.ID)
	if want := "hello from B to [" + aAddr.String() + "]"; !strings.HasPrefix(body, want) {
		t.Fatalf("curl %s = %q, want %q...: the source must be A's overlay address", url, body, want)
	}
	t.Logf("curl: %s", body)

	// A: a UDP exchange with B's echo.
	var uc *net.UDPConn
	if err := a.Host.Do(func() error {
		var err error
		uc, err = net.ListenUDP("udp6", nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	to := netip.AddrPortFrom(bAddr, 9000)
	buf := make([]byte, 2000)
	for ctx.Err() == nil {
		uc.WriteToUDPAddrPort([]byte("ping over the TUN"), to)
		uc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, from, err := uc.ReadFromUDPAddrPort(buf)
		if err != nil {
			continue
		}
		if from.Addr() != bAddr || !bytes.Equal(buf[:n], []byte("echo:ping over the TUN")) {
			t.Fatalf("UDP answer %q from %s", buf[:n], from)
		}
		st, err := a.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("UDP echo from %s; A's packet counters %+v", from, st.Packets)

		// Names on A's TUN: port 53 of A's overlay address. A query to a
		// local address travels over lo, whose IPv6 the lab turns off (a
		// host has it on): turn it on in A's namespace.
		if out, err := a.Host.Command(ctx, "sysctl", "-w", "net.ipv6.conf.lo.disable_ipv6=0").CombinedOutput(); err != nil {
			t.Fatalf("sysctl: %v: %s", err, out)
		}
		dns := netip.AddrPortFrom(aAddr, 53)
		got, rcode := dnsAAAA(t, a.Host, dns, b.ID+".keymesh.")
		if len(got) != 1 || got[0] != bAddr || rcode != dnsmessage.RCodeSuccess {
			t.Fatalf("%s.keymesh AAAA from %s = %v (%v), want %s", b.ID, dns, got, rcode, bAddr)
		}
		if got, rcode := dnsAAAA(t, a.Host, dns, "example.com."); len(got) != 0 || rcode == dnsmessage.RCodeSuccess {
			t.Fatalf("example.com AAAA from %s = %v (%v), want no address and an error", dns, got, rcode)
		}
		return
	}
	t.Fatal("no UDP echo over the TUN")
}

// dnsAAAA asks the DNS server at server for name's AAAA records from a
// socket in h's namespace and returns the answer's addresses and rcode.
func dnsAAAA(t *testing.T, h *natlab.Host, server netip.AddrPort, name string) ([]netip.Addr, dnsmessage.RCode) {
	t.Helper()
	var uc *net.UDPConn
	if err := h.Do(func() error {
		var err error
		uc, err = net.ListenUDP("udp6", nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	q := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, RecursionDesired: true})
	q.StartQuestions()
	q.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET})
	msg, err := q.Finish()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2000)
	for i := 0; i < 20; i++ {
		uc.WriteToUDPAddrPort(msg, server)
		uc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := uc.Read(buf)
		if err != nil {
			continue
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil || h.ID != 7 {
			t.Fatalf("DNS answer %x: %v", buf[:n], err)
		}
		p.SkipAllQuestions()
		var addrs []netip.Addr
		for {
			rh, err := p.AnswerHeader()
			if err != nil {
				break
			}
			if rh.Type != dnsmessage.TypeAAAA {
				p.SkipAnswer()
				continue
			}
			r, err := p.AAAAResource()
			if err != nil {
				t.Fatal(err)
			}
			addrs = append(addrs, netip.AddrFrom16(r.AAAA))
		}
		return addrs, h.RCode
	}
	t.Fatalf("no DNS answer from %s for %s", server, name)
	return nil, 0
}

// TestTUNTCPSurvivesAddressChange: A (port-restricted) sends 32 MiB to B
// (full cone) over one kernel TCP connection between their overlay
// addresses, both in TUN mode; a quarter of the way in, A's host moves to
// another LAN address (so a new NAT mapping). The connection goes on and B
// receives every byte: the same SHA-256.
func TestTUNTCPSurvivesAddressChange(t *testing.T) {
	needRoot(t)
	ctx := testContext(t, 90*time.Second)
	lab := startLab(t, ctx)
	sa, _, a, b := aliceAndBob(t, ctx, lab, natlab.PortRestricted, natlab.FullCone, PeerConfig{Args: []string{"--tun", "km0"}})
	untilPath(t, ctx, a, b, "direct", 15*time.Second)
	bAddr := overlayOf(t, b.ID)

	var ln net.Listener
	if err := b.Host.Do(func() error {
		var err error
		for i := 0; i < 50; i++ {
			if ln, err = net.Listen("tcp6", netip.AddrPortFrom(bAddr, 5001).String()); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		got <- r
	}()

	var c net.Conn
	if err := a.Host.Do(func() error {
		d := net.Dialer{Timeout: 3 * time.Second}
		var err error
		for ctx.Err() == nil {
			if c, err = d.DialContext(ctx, "tcp6", netip.AddrPortFrom(bAddr, 5001).String()); err == nil {
				return nil
			}
			time.Sleep(200 * time.Millisecond)
		}
		return err
	}); err != nil {
		t.Fatalf("connect over the TUN: %v", err)
	}
	defer c.Close()
	const size, rate = 32 << 20, 8 << 20
	h := sa.Host()
	old, next := h.CurrentAddr(), h.NextLANAddr()
	src := NewSource(size, rate, 7)
	moved := make(chan error, 1)
	src.At(size/4, func() { moved <- h.SetAddr(ctx, next) })
	start := time.Now()
	if _, err := io.Copy(c, src); err != nil {
		t.Fatalf("send: %v", err)
	}
	c.(*net.TCPConn).CloseWrite()
	var r result
	select {
	case r = <-got:
	case <-ctx.Done():
		t.Fatal("B did not receive everything before the deadline")
	}
	select {
	case err := <-moved:
		if err != nil {
			t.Fatalf("renumber: %v", err)
		}
	default:
		t.Fatal("the transfer ended before the address change")
	}
	if r.err != nil || r.n != size || r.sum != src.Sum() {
		t.Fatalf("B received %d bytes (err %v), sha256 %x; sent %d bytes, sha256 %x", r.n, r.err, r.sum[:8], int64(size), src.Sum())
	}
	t.Logf("%s moved from %s to %s mid-transfer; %d MiB over one TCP connection inside the TUN in %s, sha256 %x on both ends",
		h.Name, old, next.Addr(), size>>20, time.Since(start).Round(time.Millisecond), r.sum[:8])
}
