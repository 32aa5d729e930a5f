//go:build linux

package scaleout_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/relayclient"
	"github.com/keymesh/keymesh/internal/wire"
)

// relayInstance is one relay process.
type relayInstance struct {
	*proc
	name  string
	udp   netip.AddrPort
	admin string
}

var relayReadyRe = regexp.MustCompile(`(\{[^\n]*"msg":"relay ready"[^\n]*\})\n`)

// startRelay runs a relay on listen with the shared ticket key file.
func startRelay(t *testing.T, bin, name, listen, keyFile string, sockets int) *relayInstance {
	t.Helper()
	p := startProc(t, name, bin, "--listen", listen, "--reuseport", fmt.Sprint(sockets),
		"--ticket-key-file", keyFile, "--admin", "127.0.0.1:0", "--log-format", "json")
	m := p.waitOutput(t, "stderr", relayReadyRe, 10*time.Second)
	var rec struct{ UDP, Admin string }
	if err := json.Unmarshal([]byte(m[1]), &rec); err != nil {
		t.Fatalf("%s ready line %q: %v", name, m[1], err)
	}
	udp, err := netip.ParseAddrPort(rec.UDP)
	if err != nil {
		t.Fatalf("%s udp %q: %v", name, rec.UDP, err)
	}
	return &relayInstance{proc: p, name: name, udp: udp, admin: "http://" + rec.Admin}
}

const (
	mBinds     = "keymesh_relay_binds_total"
	mForwarded = "keymesh_relay_forwarded_packets_total"
)

// TestRelayAnycast shows the relay is stateless across instances: two
// relay processes on one UDP address (SO_REUSEPORT, two sockets each) with
// one ticket key file forward a ticket that either bound, the kernel
// spreading senders over both; killing the instance that bound the ticket
// loses nothing; and a third instance on another port, sharing only the
// key file, forwards it too.
func TestRelayAnycast(t *testing.T) {
	_, bin := binaries(t)
	keyFile := filepath.Join(t.TempDir(), "ticket.keys")
	line, err := exec.Command(bin, "--gen-ticket-key", "--ticket-key-id", "3").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, line, 0o600); err != nil {
		t.Fatal(err)
	}
	r1 := startRelay(t, bin, "relay1", "127.0.0.1:0", keyFile, 2)
	r2 := startRelay(t, bin, "relay2", r1.udp.String(), keyFile, 2)
	if r2.udp != r1.udp {
		t.Fatalf("relay2 bound %v, want the shared %v", r2.udp, r1.udp)
	}
	relays := []*relayInstance{r1, r2}

	// B binds through the shared address; exactly one instance did it.
	b, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	bid, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	bound, err := relayclient.Bind(ctx, b, net.UDPAddrFromAddrPort(r1.udp), bid)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if bound.Observed != b.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Fatalf("relay observed %v, want %v", bound.Observed, b.LocalAddr())
	}
	var binder, other *relayInstance
	settle(t, func() bool {
		for i, r := range relays {
			if scrape(t, r.admin)[mBinds] == 1 {
				binder, other = r, relays[1-i]
			}
		}
		return binder != nil
	})
	if binder == nil || scrape(t, other.admin)[mBinds] != 0 {
		t.Fatalf("want exactly one instance to count the bind")
	}

	// Senders on 24 source ports: the kernel hashes each to one of the
	// four sockets, so both instances forward; B gets every packet.
	const senders = 24
	sendAll(t, b, r1.udp, bound.Ticket, senders, 0)
	// (A relay adds to its counters right after sending a batch: wait for
	// them to settle.)
	var fwd [2]float64
	settle(t, func() bool {
		for i, r := range relays {
			fwd[i] = scrape(t, r.admin)[mForwarded]
		}
		return fwd[0]+fwd[1] >= senders
	})
	t.Logf("ticket bound by %s; %d packets forwarded: relay1 %v, relay2 %v", binder.name, senders, fwd[0], fwd[1])
	if fwd[0]+fwd[1] != senders {
		t.Fatalf("forwarded %v + %v, want %d", fwd[0], fwd[1], senders)
	}
	if scrape(t, other.admin)[mForwarded] == 0 {
		t.Fatalf("%s, which did not bind the ticket, forwarded nothing", other.name)
	}

	// Kill the binder: the survivor forwards every packet alone.
	binder.kill()
	before := scrape(t, other.admin)[mForwarded]
	sendAll(t, b, r1.udp, bound.Ticket, senders, 100)
	var got float64
	settle(t, func() bool { got = scrape(t, other.admin)[mForwarded] - before; return got >= senders })
	if got != senders {
		t.Fatalf("after killing %s, %s forwarded %v, want %d", binder.name, other.name, got, senders)
	}

	// Another port, the same key file: that instance forwards it too.
	r3 := startRelay(t, bin, "relay3", "127.0.0.1:0", keyFile, 1)
	sendAll(t, b, r3.udp, bound.Ticket, 4, 200)
	settle(t, func() bool { got = scrape(t, r3.admin)[mForwarded]; return got >= 4 })
	if got != 4 {
		t.Fatalf("relay3 forwarded %v, want 4", got)
	}
}

// sendAll sends one RelaySend for B's ticket from each of n fresh sockets
// (tags base..base+n-1) to the relay at addr and checks that B receives
// each, as a Relayed frame with the sender's tag and payload.
func sendAll(t *testing.T, b *net.UDPConn, addr netip.AddrPort, ticket []byte, n int, base uint64) {
	t.Helper()
	want := map[uint64]bool{}
	for i := 0; i < n; i++ {
		a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		tag := base + uint64(i)
		frame := wire.AppendRelaySend(nil, ticket, tag, fmt.Appendf(nil, "payload %d", tag))
		if _, err := a.WriteToUDPAddrPort(frame, addr); err != nil {
			t.Fatal(err)
		}
		a.Close()
		want[tag] = true
	}
	buf := make([]byte, 2048)
	_ = b.SetReadDeadline(time.Now().Add(3 * time.Second))
	defer b.SetReadDeadline(time.Time{})
	for len(want) > 0 {
		m, _, err := b.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("%d of %d relayed packets missing: %v", len(want), n, err)
		}
		tag, p, err := wire.ParseData(buf[:m])
		if err != nil || string(p) != fmt.Sprintf("payload %d", tag) || !want[tag] {
			t.Fatalf("unexpected relayed frame tag %d %q: %v", tag, p, err)
		}
		delete(want, tag)
	}
}

// settle polls cond for up to 2 s (counters a server updates just after it
// answers).
func settle(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); !cond() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}
