package relaycmd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/certs"
	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/relayclient"
	"github.com/keymesh/keymesh/internal/streamclient"
	"github.com/keymesh/keymesh/internal/testutil/pebbletest"
	"github.com/keymesh/keymesh/internal/wire"
)

// TestStreamRelayBindsThroughTunnel opens a TLS tunnel to the relay's
// stream service (self-signed, pinned) and binds a ticket through it: the
// ticket relay sees the tunnel's presence address, so UDP peers can reach a
// peer that has only TCP.
func TestStreamRelayBindsThroughTunnel(t *testing.T) {
	key := filepath.Join(t.TempDir(), "relay.key")
	r := startRun(t, []string{"--dev", "--listen", "127.0.0.1:0", "--admin", "", "--tls-listen", "127.0.0.1:0", "--key", key}, nil)
	if r.addrs.StreamURL == "" || !strings.Contains(r.addrs.StreamURL, "#") {
		t.Fatalf("stream URL %q: want one with the key pin", r.addrs.StreamURL)
	}
	target, err := streamclient.ParseTarget(r.addrs.StreamURL)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := crypto.GenerateIdentity(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tun, err := streamclient.Dial(ctx, target, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	b, err := relayclient.Bind(ctx, tun, r.addrs.UDP, id)
	if err != nil {
		t.Fatal(err)
	}
	if b.Observed != tun.Presence() {
		t.Fatalf("relay saw %v, tunnel presence is %v", b.Observed, tun.Presence())
	}
	// A UDP peer sends to the tunnelled peer through the ticket relay.
	forwardOnceTo(t, r.addrs.UDP, b.Ticket, tun, id)
}

func forwardOnceTo(t *testing.T, relayAddr net.Addr, ticket []byte, to net.PacketConn, toID *crypto.Identity) {
	t.Helper()
	a, aid := udpPeer(t)
	_ = toID
	if _, err := a.WriteTo(wire.AppendRelaySend(nil, ticket, aid.ID().Tag(), []byte("over tcp")), relayAddr); err != nil {
		t.Fatal(err)
	}
	_ = to.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := to.ReadFrom(buf)
	if err != nil {
		t.Fatalf("nothing arrived through the tunnel: %v", err)
	}
	if !strings.Contains(string(buf[:n]), "over tcp") {
		t.Fatalf("got %q", buf[:n])
	}
}

func TestStreamRelayACMEUnreachableIsOneLine(t *testing.T) {
	c, err := parse([]string{"--dev", "--listen", "127.0.0.1:0", "--admin", "", "--tls-listen", "127.0.0.1:0",
		"--acme-domain", "relay.test", "--acme-email", "ops@example.org", "--acme-ca", "https://127.0.0.1:1/dir", "--acme-storage", t.TempDir()}, noEnv, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = Run(ctx, c.opts, io.Discard, nil)
	if !errors.Is(err, certs.ErrUnreachable) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Run = %v, want one line saying the CA cannot be reached", err)
	}
}

func TestStreamRelayACMEFromPebble(t *testing.T) {
	ca := pebbletest.Start(t)
	r := startRun(t, []string{"--dev", "--listen", "127.0.0.1:0", "--admin", "", "--tls-listen", "127.0.0.1:0",
		"--acme-domain", "localhost", "--acme-email", "ops@example.org", "--acme-ca", ca.Directory, "--acme-ca-roots", ca.RootsFile,
		"--acme-storage", t.TempDir(), "--acme-http-port", strconv.Itoa(ca.HTTPPort)}, nil)
	if strings.Contains(r.addrs.StreamURL, "#") || !strings.HasPrefix(r.addrs.StreamURL, "wss://localhost:") {
		t.Fatalf("stream URL %q: want wss://localhost:port without a pin", r.addrs.StreamURL)
	}
}

func TestStreamFlagsBadInvocations(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad allow", []string{"--allow-destinations", "10.0.0.0/8,intranet"}, "--allow-destinations"},
		{"bad advertise", []string{"--stream-advertise-ip", "0.0.0.0"}, "--stream-advertise-ip"},
		{"bad own port", []string{"--stream-own-ports", "3478,http"}, "--stream-own-ports"},
		{"zero limit", []string{"--tls-listen", "127.0.0.1:0", "--stream-max-tunnels-per-ip", "0"}, "--stream-max-tunnels-per-ip"},
		{"small header", []string{"--tls-listen", "127.0.0.1:0", "--stream-max-header-bytes", "10"}, "--stream-max-header-bytes"},
		{"wildcard without advertise", []string{"--tls-listen", "0.0.0.0:0", "--key", filepath.Join(t.TempDir(), "k")}, "--stream-advertise-ip"},
		{"bad stream server", []string{"--stream-servers", "203.0.113.5"}, "--stream-servers"},
		{"bad stream relay source", []string{"--stream-relay-sources", "relay.example"}, "--stream-relay-sources"},
		{"small factor", []string{"--stream-relay-factor", "0.5"}, "--stream-relay-factor"},
		{"zero server rate", []string{"--tls-listen", "127.0.0.1:0", "--stream-server-rate", "0"}, "--stream-server-rate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			args := append([]string{"--dev", "--listen", "127.0.0.1:0", "--admin", ""}, tc.args...)
			if code := MainEnv(ctx, args, noEnv, &out, &errb); code != 2 {
				t.Fatalf("exit %d, want 2 (stderr %q)", code, errb.String())
			}
			if msg := errb.String(); strings.Count(msg, "\n") != 1 || !strings.Contains(msg, tc.want) {
				t.Fatalf("want one line naming %s, got %q", tc.want, msg)
			}
		})
	}
	c, err := parse([]string{"--allow-destinations", "10.1.0.0/16, 192.0.2.1"}, noEnv, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.0.2.1/32")}; !slices.Equal(c.opts.AllowDestinations, want) {
		t.Fatalf("AllowDestinations %v, want %v", c.opts.AllowDestinations, want)
	}
	c, err = parse([]string{"--stream-servers", "203.0.113.5:3478, [2001:db8::5]:3479", "--stream-relay-sources", "198.51.100.7",
		"--tls-listen", "192.0.2.10:443", "--stream-advertise-ip", "203.0.113.10"}, noEnv, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.5:3478"), netip.MustParseAddrPort("[2001:db8::5]:3479")}; !slices.Equal(c.opts.Stream.Servers, want) {
		t.Fatalf("Stream.Servers %v, want %v", c.opts.Stream.Servers, want)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32")}; !slices.Equal(c.opts.RateLimit.StreamRelays, want) {
		t.Fatalf("RateLimit.StreamRelays %v, want %v", c.opts.RateLimit.StreamRelays, want)
	}
	// The ticket relay on this host sees its own stream relay's tunnels
	// come from the presence and the advertised address.
	if got, want := c.opts.Stream.presenceSources(), []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32"), netip.MustParsePrefix("203.0.113.10/32")}; !slices.Equal(got, want) {
		t.Fatalf("presenceSources %v, want %v", got, want)
	}
}

// TestStreamRelayAdvertisesPublicIP: presences bound on 0.0.0.0 (AWS: the
// public IPv4 is not on the interface) are announced, and the relay's URL
// printed, with --stream-advertise-ip.
func TestStreamRelayAdvertisesPublicIP(t *testing.T) {
	key := filepath.Join(t.TempDir(), "relay.key")
	r := startRun(t, []string{"--dev", "--listen", "127.0.0.1:0", "--admin", "", "--tls-listen", "127.0.0.1:0", "--key", key,
		"--stream-presence-ip", "0.0.0.0", "--stream-advertise-ip", "203.0.113.7"}, nil)
	if !strings.HasPrefix(r.addrs.StreamURL, "wss://203.0.113.7:") {
		t.Fatalf("stream URL %q: want the advertised address", r.addrs.StreamURL)
	}
	target, err := streamclient.ParseTarget(r.addrs.StreamURL)
	if err != nil {
		t.Fatal(err)
	}
	target.URL = "wss://" + r.addrs.Stream.String() + streamclient.Path // where it really listens
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, _ := crypto.GenerateIdentity(nil)
	tun, err := streamclient.Dial(ctx, target, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	if tun.Presence().Addr() != netip.MustParseAddr("203.0.113.7") || tun.Presence().Port() == 0 {
		t.Fatalf("presence %v, want 203.0.113.7:<port>", tun.Presence())
	}
}

// TestStreamHTTPLimits is the slow client against the stream relay's HTTP
// server: a connection that never finishes its TLS handshake, one that
// idles after a request, and an oversized header.
func TestStreamHTTPLimits(t *testing.T) {
	key := filepath.Join(t.TempDir(), "relay.key")
	r := startRun(t, []string{"--dev", "--listen", "127.0.0.1:0", "--admin", "", "--tls-listen", "127.0.0.1:0", "--key", key,
		"--stream-handshake-timeout", "200ms", "--stream-max-header-bytes", "2048"}, nil)
	deadline := time.Now().Add(10 * time.Second)

	// Silent TCP: the server hangs up (a read ends) instead of waiting.
	raw, err := net.Dial("tcp", r.addrs.Stream.String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetReadDeadline(deadline)
	if _, err := raw.Read(make([]byte, 10)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("silent connection still open: %v", err)
	}

	tc, err := tls.Dial("tcp", r.addrs.Stream.String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	_ = tc.SetDeadline(deadline)
	br := bufio.NewReader(tc)
	// An oversized header is refused (431).
	fmt.Fprintf(tc, "GET /v1/tunnel HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n", strings.Repeat("a", 8<<10))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("8 KB header: %d, want 431", resp.StatusCode)
	}

	// A kept-alive connection that goes idle is closed.
	tc2, err := tls.Dial("tcp", r.addrs.Stream.String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tc2.Close()
	_ = tc2.SetDeadline(deadline)
	br2 := bufio.NewReader(tc2)
	fmt.Fprintf(tc2, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err = http.ReadResponse(br2, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Close {
		t.Fatalf("first request: %d close=%v", resp.StatusCode, resp.Close)
	}
	if _, err := br2.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle keep-alive connection still open: %v", err)
	}
}

// TestStreamTunnelsBindDespiteAbusiveTunnel is the shared-address attack
// on the ticket relay: every tunnel binds from the stream relay's one
// presence address, so one tunnel flooding binds at the tunnel rate used
// up that address's challenges and binds, and no tunnelled peer could
// bind. The relay gives its own presence address --stream-relay-factor
// times the per-source limits and holds each tunnel to
// --stream-server-rate toward the ticket relay: the other tunnels bind.
func TestStreamTunnelsBindDespiteAbusiveTunnel(t *testing.T) {
	key := filepath.Join(t.TempDir(), "relay.key")
	// Per-source limits that hardly refill within the test: 5 x 20 = 100
	// challenges and binds for the presence address.
	r := startRun(t, []string{"--dev", "--listen", "127.0.0.1:0", "--admin", "", "--tls-listen", "127.0.0.1:0", "--key", key,
		"--challenge-rate", "0.0001", "--challenge-burst", "5", "--bind-rate", "0.0001", "--bind-burst", "5",
		"--stream-relay-factor", "20", "--stream-server-burst", "10", "--stream-server-rate", "0.01"}, nil)
	target, err := streamclient.ParseTarget(r.addrs.StreamURL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dial := func() (*streamclient.Tunnel, *crypto.Identity) {
		id, _ := crypto.GenerateIdentity(nil)
		tun, err := streamclient.Dial(ctx, target, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tun.Close() })
		return tun, id
	}
	abuser, aid := dial()
	flood := wire.AppendRelayBind(nil, aid, time.Now(), crypto.Cookie{})
	for range 1000 {
		if _, err := abuser.WriteTo(flood, r.addrs.UDP); err != nil {
			t.Fatal(err)
		}
	}
	// The abuser's own bind goes after its flood through the same
	// tunnel and socket: once it is over, the flood has reached the relay.
	actx, acancel := context.WithTimeout(ctx, 2*time.Second)
	_, _ = relayclient.Bind(actx, abuser, r.addrs.UDP, aid)
	acancel()
	for i := range 5 {
		tun, id := dial()
		bctx, bcancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := relayclient.Bind(bctx, tun, r.addrs.UDP, id)
		bcancel()
		if err != nil {
			t.Fatalf("tunnelled peer %d of 5 could not bind after one tunnel's flood: %v", i, err)
		}
	}
}
