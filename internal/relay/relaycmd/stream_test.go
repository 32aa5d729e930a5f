package relaycmd

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/certs"
	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/relay"
	"github.com/keymesh/keymesh/internal/streamrelay"
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
	target, err := streamrelay.ParseTarget(r.addrs.StreamURL)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := crypto.GenerateIdentity(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tun, err := streamrelay.Dial(ctx, target, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	b, err := relay.Bind(ctx, tun, r.addrs.UDP, id)
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
	err = Run(ctx, c.opts, nil)
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
