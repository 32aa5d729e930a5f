package daemon_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"

	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/daemon/daemontest"
)

func testPeer(t testing.TB) crypto.PeerID {
	t.Helper()
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	return id.ID()
}

func TestParseDestination(t *testing.T) {
	p := testPeer(t)
	ov := p.OverlayAddr().String()
	for _, tc := range []struct{ in, want string }{
		{p.String(), p.String()},
		{strings.ToUpper(p.String()), p.String()},
		{p.String() + ".keymesh", p.String()},
		{p.String() + ".keymesh.", p.String()},
		{ov, ov},
		{"[" + ov + "]", ov},
	} {
		got, err := daemon.ParseDestination(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("daemon.ParseDestination(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "example.com", "10.0.0.1", "::1", "fd00::1", "x.keymesh", p.String()[:51]} {
		if _, err := daemon.ParseDestination(bad); !errors.Is(err, daemon.ErrNotOverlay) {
			t.Errorf("daemon.ParseDestination(%q) err = %v, want daemon.ErrNotOverlay", bad, err)
		}
	}
}

func FuzzParseDestination(f *testing.F) {
	p := testPeer(f)
	f.Add(p.String())
	f.Add(p.String() + ".keymesh")
	f.Add(p.OverlayAddr().String())
	f.Add("example.com")
	f.Add("[fd4b::1]")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := daemon.ParseDestination(s)
		if err != nil {
			return
		}
		// Whatever is accepted is a peer ID or an overlay address.
		if a, err := netip.ParseAddr(got); err == nil {
			if !crypto.IsOverlay(a) {
				t.Fatalf("%q accepted as non-overlay %s", s, a)
			}
			return
		}
		if _, err := crypto.ParsePeerID(got); err != nil {
			t.Fatalf("%q accepted as %q, neither ID nor address", s, got)
		}
	})
}

// socksConnect is a minimal SOCKS5 client: no auth, CONNECT to a domain
// name or an IP. It returns the reply code and, on success, the connection.
func socksConnect(t *testing.T, proxy, host string, port uint16) (byte, net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte{5, 1, 0})
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil || m != [2]byte{5, 0} {
		t.Fatalf("method reply %v, %v", m, err)
	}
	req := []byte{5, 1, 0}
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		req = append(req, 4)
		req = append(req, a.AsSlice()...)
	} else {
		req = append(req, 3, byte(len(host)))
		req = append(req, host...)
	}
	req = binary.BigEndian.AppendUint16(req, port)
	c.Write(req)
	var head [4]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		t.Fatalf("reply: %v", err)
	}
	alen := map[byte]int{1: 4, 4: 16}[head[3]]
	if _, err := io.ReadFull(c, make([]byte, alen+2)); err != nil {
		t.Fatalf("reply address: %v", err)
	}
	if head[1] != 0 {
		c.Close()
		return head[1], nil
	}
	c.SetDeadline(time.Time{})
	return 0, c
}

func TestSOCKS(t *testing.T) {
	h := startServer(t, daemon.Config{})
	p := testPeer(t)
	h.node.Remote(p.String(), daemontest.UpperAfterEOF)
	h.node.Remote(p.OverlayAddr().String(), daemontest.UpperAfterEOF)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.srv.ServeSOCKS(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeSOCKS: %v", err)
		}
	}()
	waitFor(t, func() bool { st, _ := h.client.Status(tctx(t)); return st.SOCKS5 != "" })

	for _, host := range []string{p.String(), p.String() + ".keymesh", p.OverlayAddr().String()} {
		code, c := socksConnect(t, ln.Addr().String(), host, 8080)
		if code != 0 {
			t.Fatalf("CONNECT %s: reply %d", host, code)
		}
		c.Write([]byte("get"))
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || !bytes.Equal(got, []byte("GET port 8080")) {
			t.Errorf("via %s: got %q, %v", host, got, err)
		}
	}
	// Anything outside the overlay is refused by rule (code 2), with no
	// DNS lookup and no dial.
	for _, host := range []string{"example.com", "127.0.0.1", "::1"} {
		if code, _ := socksConnect(t, ln.Addr().String(), host, 80); code != 2 {
			t.Errorf("CONNECT %s: reply %d, want 2 (not allowed)", host, code)
		}
	}
	// A peer that refuses: the node's error means "refused" -> code 5.
	q := testPeer(t)
	if code, _ := socksConnect(t, ln.Addr().String(), q.String(), 80); code != 5 {
		t.Errorf("CONNECT to a refusing peer: reply %d, want 5 (connection refused)", code)
	}
}
