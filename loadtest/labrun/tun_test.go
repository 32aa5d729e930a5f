package labrun

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/loadtest/natlab"
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
// comes back echoed: unmodified programs, kernel sockets, no proxy.
func TestTUNHTTPAndUDP(t *testing.T) {
	needRoot(t)
	ctx := testContext(t, 90*time.Second)
	lab := startLab(t, ctx)
	sa, err := lab.AddSite(ctx, "alice", natlab.PortRestricted)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := lab.AddSite(ctx, "bob", natlab.Symmetric)
	if err != nil {
		t.Fatal(err)
	}
	a, b := startPeers(t, ctx, lab, sa.Host(), sb.Host(), PeerConfig{Args: []string{"--tun", "km0"}})
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
		out, err := a.Host.Command(cctx, "curl", "-sS", "-g", "--max-time", "4", url).CombinedOutput()
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
		return
	}
	t.Fatal("no UDP echo over the TUN")
}
