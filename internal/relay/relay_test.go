package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/obs"
	"github.com/keymesh/keymesh/internal/testutil/ci"
	"github.com/keymesh/keymesh/internal/wire"
)

func TestBindAndForward(t *testing.T) {
	for _, mode := range serveModes {
		t.Run(mode, func(t *testing.T) {
			keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)
			r := startRelay(t, Config{Keys: keys}, mode, "127.0.0.1:0")
			a, b := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0")

			before := time.Now()
			bb := b.bind(t, r.addr)
			local := b.conn.LocalAddr().(*net.UDPAddr).AddrPort()
			if bb.Observed != local {
				t.Fatalf("observed %v, want the bind's source %v", bb.Observed, local)
			}
			tk, err := keys.Open(bb.Ticket)
			if err != nil {
				t.Fatalf("ticket does not open: %v", err)
			}
			if tk.Addr != local || tk.ID != b.id.ID() {
				t.Fatalf("ticket holds %v %v, want %v %v", tk.Addr, tk.ID, local, b.id.ID())
			}
			if lo, hi := before.Add(DefaultTicketTTL-time.Second), time.Now().Add(DefaultTicketTTL); tk.Expiry.Before(lo) || tk.Expiry.After(hi) || !tk.Expiry.Equal(bb.Expiry) {
				t.Fatalf("ticket expiry %v (reply says %v), want about now+%v", tk.Expiry, bb.Expiry, DefaultTicketTTL)
			}

			a.send(t, r.addr, relaySend(bb.Ticket, a, "hello"))
			expectRelayed(t, b, a, "hello")
			waitMetrics(t, r.admin, map[string]float64{
				"keymesh_relay_received_packets_total":  3, // challenge, bind, send
				"keymesh_relay_binds_total":             1,
				"keymesh_relay_forwarded_packets_total": 1,
				"keymesh_relay_forwarded_bytes_total":   float64(wire.DataOverhead + len("hello")),
				"keymesh_relay_serving_sockets":         1,
			})
		})
	}
}

func TestRefusedFramesAreDroppedAndCounted(t *testing.T) {
	for _, mode := range serveModes {
		t.Run(mode, func(t *testing.T) {
			clk := newClock()
			clk.Add(-20 * time.Second) // binds made with the real clock stay within the skew
			ttl := 30 * time.Second
			keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, clk.Now)
			r := startRelay(t, Config{Keys: keys, TicketTTL: ttl, Now: clk.Now}, mode, "127.0.0.1:0")
			a, b := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0")
			ticket := b.bind(t, r.addr).Ticket

			forged := relaySend(ticket, a, "forged")
			forged[wire.HeaderLen+60] ^= 1
			other := mustKeys(t, 9, map[byte][]byte{9: testKey(9)}, nil)
			otherTicket := other.Seal(nil, crypto.Ticket{Addr: b.conn.LocalAddr().(*net.UDPAddr).AddrPort(), Expiry: time.Now().Add(time.Hour)})
			badVersion := relaySend(ticket, a, "version")
			badVersion[1] = wire.Version + 1
			cookie := a.cookie(t, r.addr)
			badSig := wire.AppendRelayBind(nil, a.id, time.Now(), cookie)
			badSig[wire.HeaderLen+32+8+crypto.CookieSize+5] ^= 1
			oldBind := wire.AppendRelayBind(nil, a.id, time.Now(), cookie)
			oldBind[1] = wire.Version
			for _, f := range [][]byte{
				forged,
				relaySend(otherTicket, a, "unknown key"),
				relaySend(ticket, a, "truncated")[:wire.RelaySendOverhead-1],
				badVersion,
				[]byte("hello, not a frame"),
				wire.AppendData(nil, 1, []byte("data frame to a relay")),
				badSig,
				oldBind,
				wire.AppendRelayBind(nil, a.id, time.Now().Add(-2*time.Minute), cookie),
				wire.AppendRelayBind(nil, a.id, time.Now(), cookie)[:wire.RelayBindLen-1],
			} {
				a.send(t, r.addr, f)
			}
			a.send(t, r.addr, relaySend(ticket, a, "marker 1"))
			expectRelayed(t, b, a, "marker 1")

			clk.Add(ttl + time.Second)
			a.send(t, r.addr, relaySend(ticket, a, "expired"))
			fresh := b.bind(t, r.addr).Ticket
			a.send(t, r.addr, relaySend(fresh, a, "marker 2"))
			expectRelayed(t, b, a, "marker 2")
			if got := b.recv(t, 100*time.Millisecond); got != nil {
				t.Fatalf("unexpected datagram at the recipient: %q", got)
			}
			if got := a.recv(t, 50*time.Millisecond); got != nil {
				t.Fatalf("the relay answered a refused frame: %q", got)
			}
			waitMetrics(t, r.admin, map[string]float64{
				"keymesh_relay_dropped_packets_total{forged}":        1,
				"keymesh_relay_dropped_packets_total{unknown_key}":   1,
				"keymesh_relay_dropped_packets_total{truncated}":     2,
				"keymesh_relay_dropped_packets_total{bad_version}":   2,
				"keymesh_relay_dropped_packets_total{malformed}":     2,
				"keymesh_relay_dropped_packets_total{bad_signature}": 1,
				"keymesh_relay_dropped_packets_total{stale_time}":    1,
				"keymesh_relay_dropped_packets_total{expired}":       1,
				"keymesh_relay_dropped_packets_total{rate_limited}":  0,
				"keymesh_relay_forwarded_packets_total":              2,
				"keymesh_relay_binds_total":                          2,
			})
		})
	}
}

// writeKeyFile writes a ticket key file with the given lines.
func writeKeyFile(t *testing.T, path string, lines ...string) {
	t.Helper()
	s := ""
	for _, l := range lines {
		s += l
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func loadKeys(t *testing.T, path string) *crypto.TicketKeys {
	t.Helper()
	k, err := crypto.LoadTicketKeyFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ticket.keys")
	oldLine, newLine := crypto.NewTicketKeyLine(1), crypto.NewTicketKeyLine(2)
	writeKeyFile(t, path, oldLine)

	a, b := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0")
	r1 := startRelay(t, Config{Keys: loadKeys(t, path)}, "batch", "127.0.0.1:0")
	oldTicket := b.bind(t, r1.addr).Ticket
	if oldTicket[0] != 1 {
		t.Fatalf("ticket sealed under key %d, want 1", oldTicket[0])
	}
	r1.close(t)

	// Rotated: the new key seals, the old one is still accepted.
	writeKeyFile(t, path, newLine, oldLine)
	r2 := startRelay(t, Config{Keys: loadKeys(t, path)}, "batch", "127.0.0.1:0")
	a.send(t, r2.addr, relaySend(oldTicket, a, "old ticket, key listed second"))
	expectRelayed(t, b, a, "old ticket, key listed second")
	newTicket := b.bind(t, r2.addr).Ticket
	if newTicket[0] != 2 {
		t.Fatalf("after rotation the ticket is sealed under key %d, want 2", newTicket[0])
	}
	r2.close(t)

	// The old key removed: its tickets are refused, the new ones work.
	writeKeyFile(t, path, newLine)
	r3 := startRelay(t, Config{Keys: loadKeys(t, path)}, "batch", "127.0.0.1:0")
	a.send(t, r3.addr, relaySend(oldTicket, a, "old ticket, key removed"))
	a.send(t, r3.addr, relaySend(newTicket, a, "new ticket"))
	expectRelayed(t, b, a, "new ticket")
	waitMetrics(t, r3.admin, map[string]float64{
		"keymesh_relay_dropped_packets_total{unknown_key}": 1,
		"keymesh_relay_forwarded_packets_total":            1,
	})
}

func TestRestartedRelayForwardsOldTickets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ticket.keys")
	writeKeyFile(t, path, crypto.NewTicketKeyLine(7))
	a, b := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0")

	r1 := startRelay(t, Config{Keys: loadKeys(t, path)}, "batch", "127.0.0.1:0")
	ticket := b.bind(t, r1.addr).Ticket
	a.send(t, r1.addr, relaySend(ticket, a, "before restart"))
	expectRelayed(t, b, a, "before restart")
	port := r1.addr.Port
	r1.close(t)

	// A new process in all but name: a new Server, the same port, the key
	// file read again, nothing else carried over.
	r2 := startRelay(t, Config{Keys: loadKeys(t, path)}, "batch", fmt.Sprintf("127.0.0.1:%d", port))
	a.send(t, r2.addr, relaySend(ticket, a, "after restart"))
	expectRelayed(t, b, a, "after restart")
}

func TestRateLimit(t *testing.T) {
	for _, mode := range serveModes {
		t.Run(mode, func(t *testing.T) {
			clk := newClock() // frozen unless moved
			keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)
			r := startRelay(t, Config{Keys: keys, Now: clk.Now,
				RateLimit: RateLimit{Rate: 10, Burst: 5}}, mode, "127.0.0.1:0")
			a, b := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0")
			ticket := b.bind(t, r.addr).Ticket

			round := func(name string) int {
				for i := range 8 {
					a.send(t, r.addr, relaySend(ticket, a, fmt.Sprintf("%s %d", name, i)))
				}
				n := 0
				for b.recv(t, 150*time.Millisecond) != nil {
					n++
				}
				return n
			}
			if n := round("first"); n != 5 {
				t.Fatalf("a burst of 8 against a bucket of 5: %d forwarded, want 5", n)
			}
			clk.Add(300 * time.Millisecond) // 3 tokens back
			if n := round("second"); n != 3 {
				t.Fatalf("after 300ms at 10/s: %d forwarded, want 3", n)
			}
			// Another port of the same address shares the bucket (were it
			// forwarded, it would arrive before the next frame)...
			d := newPeer(t, "127.0.0.1:0")
			d.send(t, r.addr, relaySend(ticket, d, "same address, other port"))
			// ...another address has its own.
			c := newPeer(t, "127.0.0.2:0")
			c.send(t, r.addr, relaySend(ticket, c, "other source"))
			expectRelayed(t, b, c, "other source")
			waitMetrics(t, r.admin, map[string]float64{
				"keymesh_relay_dropped_packets_total{rate_limited}": 9,
				"keymesh_relay_forwarded_packets_total":             9,
			})
		})
	}
}

func TestBindBudget(t *testing.T) {
	clk := newClock()
	keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)
	r := startRelay(t, Config{Keys: keys, Now: clk.Now, RateLimit: RateLimit{BindsPerSecond: 2}}, "batch", "127.0.0.1:0")
	for i := range 2 {
		newPeer(t, "127.0.0.1:0").bind(t, r.addr)
		_ = i
	}
	p := newPeer(t, "127.0.0.1:0")
	// A challenge costs no signature check, so the budget does not stop it.
	cookie := p.cookie(t, r.addr)
	p.send(t, r.addr, wire.AppendRelayBind(nil, p.id, time.Now(), cookie))
	if got := p.recv(t, 200*time.Millisecond); got != nil {
		t.Fatal("a third bind within the second was answered")
	}
	clk.Add(time.Second)
	p.bind(t, r.addr)
	waitMetrics(t, r.admin, map[string]float64{
		"keymesh_relay_dropped_packets_total{bind_budget}": 1,
		"keymesh_relay_binds_total":                        3,
	})
}

func TestDualStack(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		ci.Skipf(t, "no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	for _, mode := range serveModes {
		t.Run(mode, func(t *testing.T) {
			keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)
			r := startRelay(t, Config{Keys: keys}, mode, "[::]:0")
			port := r.addr.Port
			to4 := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
			to6 := &net.UDPAddr{IP: net.IPv6loopback, Port: port}
			v4, v6 := newPeer(t, "127.0.0.1:0"), newPeer(t, "[::1]:0")

			b4 := v4.bind(t, to4)
			if want := v4.conn.LocalAddr().(*net.UDPAddr).AddrPort(); b4.Observed != want || !b4.Observed.Addr().Is4() {
				t.Fatalf("IPv4 peer observed as %v, want %v (unmapped)", b4.Observed, want)
			}
			b6 := v6.bind(t, to6)
			v4.send(t, to4, relaySend(b6.Ticket, v4, "4 to 6"))
			expectRelayed(t, v6, v4, "4 to 6")
			v6.send(t, to6, relaySend(b4.Ticket, v6, "6 to 4"))
			expectRelayed(t, v4, v6, "6 to 4")
		})
	}
}

func TestIPv4SocketCannotReachIPv6Ticket(t *testing.T) {
	for _, mode := range serveModes {
		t.Run(mode, func(t *testing.T) {
			keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)
			r := startRelay(t, Config{Keys: keys}, mode, "127.0.0.1:0")
			a := newPeer(t, "127.0.0.1:0")
			t6 := keys.Seal(nil, crypto.Ticket{Addr: netip.MustParseAddrPort("[::1]:9"), Expiry: time.Now().Add(time.Hour)})
			a.send(t, r.addr, relaySend(t6, a, "nowhere"))
			waitMetrics(t, r.admin, map[string]float64{
				"keymesh_relay_dropped_packets_total{send_failed}": 1,
			})
			// The loop survives it.
			b := newPeer(t, "127.0.0.1:0")
			a.send(t, r.addr, relaySend(b.bind(t, r.addr).Ticket, a, "still serving"))
			expectRelayed(t, b, a, "still serving")
		})
	}
}

func TestSeveralSocketsOneServer(t *testing.T) {
	keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)
	admin := obs.NewAdmin("relay", nil)
	srv, err := New(Config{Keys: keys, Registerer: admin.Registry})
	if err != nil {
		t.Fatal(err)
	}
	var relays []*testRelay
	for range 3 {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		relays = append(relays, serveOn(t, srv, admin, c, "batch"))
	}
	waitMetrics(t, admin, map[string]float64{"keymesh_relay_serving_sockets": 3})
	a, b := newPeer(t, "127.0.0.1:0"), newPeer(t, "127.0.0.1:0")
	// A ticket from one socket works on every other: no shared state.
	ticket := b.bind(t, relays[0].addr).Ticket
	for i, r := range relays {
		a.send(t, r.addr, relaySend(ticket, a, fmt.Sprint("via socket ", i)))
		expectRelayed(t, b, a, fmt.Sprint("via socket ", i))
	}
	for _, r := range relays {
		r.close(t)
	}
	if err := srv.Healthy(context.Background()); !errors.Is(err, ErrNotServing) {
		t.Fatalf("Healthy after every Serve returned: %v, want ErrNotServing", err)
	}
}

func TestServeReturnsErrorWhenConnCloses(t *testing.T) {
	keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)
	srv, err := New(Config{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Healthy(context.Background()); !errors.Is(err, ErrNotServing) {
		t.Fatalf("Healthy before Serve: %v, want ErrNotServing", err)
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), c) }()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve returned %v, want net.ErrClosed", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not return after its socket closed")
	}
}

func TestConfigValidate(t *testing.T) {
	keys := mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil)
	for name, cfg := range map[string]Config{
		"no keys":        {},
		"short ttl":      {Keys: keys, TicketTTL: time.Millisecond},
		"huge batch":     {Keys: keys, Batch: 5000},
		"bind burst < 1": {Keys: keys, RateLimit: RateLimit{BindBurst: 0.5}},
		"negative rate":  {Keys: keys, RateLimit: RateLimit{ChallengeRate: -1}},
	} {
		if _, err := New(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: New returned %v, want ErrConfig", name, err)
		}
	}
	if _, err := New(Config{Keys: keys, RateLimit: RateLimit{Disabled: true, Burst: -1}}); err != nil {
		t.Errorf("disabled rate limit with junk numbers: %v", err)
	}
}
