package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/names"
	"github.com/keymesh/keymesh/internal/overlay"
	"github.com/keymesh/keymesh/internal/testutil/meshtest"
	"github.com/keymesh/keymesh/node"
)

// userspacePeer is a real node in userspace mode with its daemon.
type userspacePeer struct {
	node   *node.Node
	stack  *overlay.Stack
	srv    *daemon.Server
	client *daemon.Client
}

// startUserspacePeer starts one; names, when given, is its daemon's names
// table (Config.Names).
func startUserspacePeer(t *testing.T, server string, names ...*names.Table) *userspacePeer {
	t.Helper()
	n := meshtest.Node(t, server)
	st, err := overlay.NewStack(overlay.Config{Transport: n})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stDone := make(chan error, 1)
	go func() { stDone <- st.Run(ctx) }()
	sock := filepath.Join(shortDir(t), "api", "peer.sock")
	cfg := daemon.Config{Node: daemon.FromNode(n), Socket: sock, Overlay: st}
	if len(names) > 0 {
		cfg.Names = names[0]
	}
	srv, err := daemon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := daemon.ListenSocket(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		srv.Close() // its connections close while the stack still runs
		cancel()
		<-done
		<-stDone
	})
	return &userspacePeer{node: n, stack: st, srv: srv, client: &daemon.Client{Socket: sock}}
}

// expose has p expose a loopback port (serveLocalHTTP, serveLocalUDPEcho)
// on its overlay address, and returns the port.
func (p *userspacePeer) expose(t *testing.T, port uint16) uint16 {
	t.Helper()
	if _, err := p.srv.Expose(port, true); err != nil {
		t.Fatal(err)
	}
	return port
}

// serveProxy runs serve (one of a daemon's proxies) on a loopback listener
// for 30 s at most, until the test ends, and returns the context it runs
// in and the listener.
func serveProxy(t *testing.T, serve func(context.Context, net.Listener) error) (context.Context, net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	go serve(ctx, ln)
	return ctx, ln
}

// serveLocalHTTP serves "hello from <tag>" on a loopback port and returns
// the port.
func serveLocalHTTP(t *testing.T, tag string) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "hello from "+tag)
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// An HTTP request through A's SOCKS5 proxy reaches B's web server, exposed
// on B's overlay address; both peers in userspace mode, no TUN, no root.
func TestSOCKSHTTPToUserspacePeer(t *testing.T) {
	server := meshtest.Start(t)
	a, b := startUserspacePeer(t, server), startUserspacePeer(t, server)
	port := b.expose(t, serveLocalHTTP(t, "b"))
	ctx, sl := serveProxy(t, a.srv.ServeSOCKS)
	d, err := proxy.SOCKS5("tcp", sl.Addr().String(), nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	cl := &http.Client{Transport: &http.Transport{DialContext: d.(proxy.ContextDialer).DialContext}}
	for _, host := range []string{
		b.node.ID() + ".keymesh",                  // by name
		"[" + b.node.OverlayAddr().String() + "]", // by address
	} {
		url := "http://" + host + ":" + strconv.Itoa(int(port)) + "/"
		var got string
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
			resp, err := cl.Do(req)
			if err != nil {
				t.Logf("GET %s: %v (retrying while the session comes up)", url, err)
				time.Sleep(200 * time.Millisecond)
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got = string(body)
			break
		}
		if got != "hello from b" {
			t.Fatalf("GET %s = %q, want %q", url, got, "hello from b")
		}
	}
}

// serveLocalUDPEcho answers every datagram on a loopback port with
// "echo:" and the datagram, and returns the port.
func serveLocalUDPEcho(t *testing.T) uint16 {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	return uint16(pc.LocalAddr().(*net.UDPAddr).Port)
}

// roundTrip sends datagrams on c until one comes back as want, or fails
// after the deadline.
func roundTrip(t *testing.T, c net.Conn, msg, want []byte) {
	t.Helper()
	buf := make([]byte, 65535)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil && bytes.Equal(buf[:n], want) {
			return
		}
	}
	t.Fatalf("no answer %q to %q", want, msg)
}

// A UDP round trip through a UDP forward (`peer forward --udp`: a local
// UDP port on A, ForwardUDP over A's daemon) to B's exposed UDP echo
// service, B in userspace mode.
func TestUDPForwardRoundTrip(t *testing.T) {
	server := meshtest.Start(t)
	a, b := startUserspacePeer(t, server), startUserspacePeer(t, server)
	port := b.expose(t, serveLocalUDPEcho(t))
	fwd, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- daemon.ForwardUDP(ctx, fwd, func(ctx context.Context) (net.Conn, error) {
			return a.client.DialUDP(ctx, b.node.ID(), port)
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ForwardUDP: %v", err)
		}
	}()
	c, err := net.Dial("udp", fwd.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, []byte("ping"), []byte("echo:ping"))
	// A second client of the forward is a flow of its own.
	c2, err := net.Dial("udp", fwd.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	roundTrip(t, c2, []byte("pong"), []byte("echo:pong"))
}

// UDP ASSOCIATE through A's SOCKS5 proxy to B's exposed UDP echo service,
// by overlay address and by the name A's configuration gives B; a name A's
// configuration does not hold is dropped.
func TestSOCKSUDPAssociate(t *testing.T) {
	server := meshtest.Start(t)
	b := startUserspacePeer(t, server)
	a := startUserspacePeer(t, server, webIs(t, b))
	port := b.expose(t, serveLocalUDPEcho(t))
	_, sl := serveProxy(t, a.srv.ServeSOCKS)
	ctl, err := net.Dial("tcp", sl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	// Greeting (no authentication), then UDP ASSOCIATE 0.0.0.0:0.
	ctl.Write([]byte{5, 1, 0})
	rd := make([]byte, 2)
	if _, err := io.ReadFull(ctl, rd); err != nil || rd[1] != 0 {
		t.Fatalf("greeting: %v %v", rd, err)
	}
	ctl.Write([]byte{5, 3, 0, 1, 0, 0, 0, 0, 0, 0})
	rep := make([]byte, 10)
	if _, err := io.ReadFull(ctl, rep); err != nil || rep[1] != 0 || rep[3] != 1 {
		t.Fatalf("associate reply %v: %v", rep, err)
	}
	relay := netip.AddrPortFrom(netip.AddrFrom4([4]byte(rep[4:8])), uint16(rep[8])<<8|uint16(rep[9]))
	uc, err := net.Dial("udp", relay.String())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	dst := b.node.OverlayAddr().As16()
	hdr := append([]byte{0, 0, 0, 4}, dst[:]...)
	hdr = append(hdr, byte(port>>8), byte(port))
	roundTrip(t, uc, append(hdr, "hi"...), append(append([]byte{}, hdr...), "echo:hi"...))
	named := append([]byte{0, 0, 0, 3, byte(len("web.keymesh"))}, "web.keymesh"...)
	named = append(named, byte(port>>8), byte(port))
	// The answer names its source, B's overlay address (the flow to it is
	// the one the datagrams by address opened).
	roundTrip(t, uc, append(named, "by name"...), append(append([]byte{}, hdr...), "echo:by name"...))
	unknown := append([]byte{0, 0, 0, 3, byte(len("db.keymesh"))}, "db.keymesh"...)
	unknown = append(unknown, byte(port>>8), byte(port))
	uc.Write(append(unknown, "x"...))
	uc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := uc.Read(make([]byte, 100)); err == nil {
		t.Fatalf("answer to a name this peer does not hold: %d bytes", n)
	}
	// A destination outside the overlay is dropped, not sent anywhere.
	bad := append([]byte{0, 0, 0, 1, 127, 0, 0, 1}, byte(port>>8), byte(port))
	uc.Write(append(bad, "x"...))
	uc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := uc.Read(make([]byte, 100)); err == nil {
		t.Fatalf("answer from a non-overlay destination: %d bytes", n)
	}
}

// webIs is a names table where web.keymesh names p.
func webIs(t *testing.T, p *userspacePeer) *names.Table {
	t.Helper()
	id, err := crypto.ParsePeerID(p.node.ID())
	if err != nil {
		t.Fatal(err)
	}
	tab, err := names.NewTable("", map[string]crypto.PeerID{"web": id})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// The HTTP proxy, in userspace mode: a plain GET with an absolute URL and
// a CONNECT tunnel both reach B's exposed web server, by peer ID, overlay
// address and the name A's configuration gives B; a destination outside
// the overlay, and a name A's configuration does not hold, get 403.
func TestHTTPProxyToUserspacePeer(t *testing.T) {
	server := meshtest.Start(t)
	b := startUserspacePeer(t, server)
	a := startUserspacePeer(t, server, webIs(t, b))
	port := b.expose(t, serveLocalHTTP(t, "b"))
	ctx, pl := serveProxy(t, a.srv.ServeHTTPProxy)
	proxyURL, _ := url.Parse("http://" + pl.Addr().String())
	target := "http://" + b.node.ID() + ".keymesh:" + strconv.Itoa(int(port)) + "/"
	get := func(cl *http.Client, u string) (int, string, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
		resp, err := cl.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	plain := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	var body string
	for ctx.Err() == nil {
		code, got, err := get(plain, target)
		if err == nil && code == 200 {
			body = got
			break
		}
		time.Sleep(200 * time.Millisecond) // the session is being set up
	}
	if body != "hello from b" {
		t.Fatalf("GET %s through the proxy: %q", target, body)
	}
	// CONNECT, as a client does for https://: here plain HTTP inside it.
	c, err := net.Dial("tcp", pl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hp := b.node.OverlayAddr().String()
	fmt.Fprintf(c, "CONNECT [%s]:%d HTTP/1.1\r\nHost: [%s]:%d\r\n\r\n", hp, port, hp, port)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	if string(got) != "hello from b" {
		t.Fatalf("GET inside CONNECT: %q", got)
	}
	if code, _, err := get(plain, "http://127.0.0.1:"+strconv.Itoa(int(port))+"/"); err != nil || code != http.StatusForbidden {
		t.Fatalf("GET 127.0.0.1 through the proxy: %d %v, want 403", code, err)
	}
	byName := "http://web.keymesh:" + strconv.Itoa(int(port)) + "/"
	if code, got, err := get(plain, byName); err != nil || code != 200 || got != "hello from b" {
		t.Fatalf("GET %s through the proxy: %d %q %v", byName, code, got, err)
	}
	c2, err := net.Dial("tcp", pl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	fmt.Fprintf(c2, "CONNECT web.keymesh:%d HTTP/1.1\r\nHost: web.keymesh:%d\r\n\r\n", port, port)
	br2 := bufio.NewReader(c2)
	if resp, err := http.ReadResponse(br2, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT web.keymesh: %v %v", resp, err)
	}
	fmt.Fprintf(c2, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err = http.ReadResponse(br2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(resp.Body); string(got) != "hello from b" {
		t.Fatalf("GET inside CONNECT web.keymesh: %q", got)
	}
	if code, _, err := get(plain, "http://db.keymesh:"+strconv.Itoa(int(port))+"/"); err != nil || code != http.StatusForbidden {
		t.Fatalf("GET db.keymesh (a name A does not hold) through the proxy: %d %v, want 403", code, err)
	}
}
