package turnrelay

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/keymesh/keymesh/internal/crypto"
)

// relayRoundTrip sends payloads through the allocation to an echo peer and
// checks they come back unchanged, from the peer, through the relay.
func relayRoundTrip(t *testing.T, relay net.PacketConn, peer *net.UDPAddr) {
	t.Helper()
	buf := make([]byte, 2048)
	for i := range 5 {
		msg := []byte(fmt.Sprintf("hello %d through the relay", i))
		if _, err := relay.WriteTo(msg, peer); err != nil {
			t.Fatal(err)
		}
		relay.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, from, err := relay.ReadFrom(buf)
		if err != nil {
			t.Fatalf("round trip %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Fatalf("round trip %d: got %q, want %q", i, buf[:n], msg)
		}
		if from.String() != peer.String() {
			t.Fatalf("round trip %d: from %s, want peer %s", i, from, peer)
		}
	}
}

func TestAllocateAndRelayUDPAndTCP(t *testing.T) {
	ts := startServer(t, 4, nil)
	peer := echoPeer(t)
	for _, tcp := range []bool{false, true} {
		t.Run(fmt.Sprintf("tcp=%v", tcp), func(t *testing.T) {
			u, p := crypto.TURNCredentials(testSecret, "alice", time.Hour, time.Now())
			cl := newClient(t, ts, u, p, tcp)
			relay, err := allocate(cl)
			if err != nil {
				t.Fatalf("allocate: %v", err)
			}
			ra := relay.LocalAddr().(*net.UDPAddr)
			if !ra.IP.Equal(net.IPv4(127, 0, 0, 1)) || ra.Port == 0 {
				t.Fatalf("relayed address %s, want 127.0.0.1:<port>", ra)
			}
			if got := gauge(t, ts); got != 1 {
				t.Fatalf("allocations_active = %v, want 1", got)
			}
			relayRoundTrip(t, relay, peer)
			relay.Close()
			waitFor(t, "allocation deleted", func() bool { return ts.AllocationCount() == 0 && gauge(t, ts) == 0 })
			if n := ts.quota.count("alice"); n != 0 {
				t.Fatalf("quota still counts %d for alice after delete", n)
			}
		})
	}
}

func TestRelayedAddressIsRelayIP(t *testing.T) {
	// Sockets on 0.0.0.0 need RelayIP; allocations are bound to it.
	conn, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{PacketConns: []net.PacketConn{conn}, Secret: testSecret})
	if !errors.Is(err, ErrRelayIP) {
		t.Fatalf("wildcard socket without RelayIP: err = %v, want ErrRelayIP", err)
	}
	conn.Close()
}

func turnErrorCode(err error) int {
	var te *stun.TurnError
	if errors.As(err, &te) {
		return int(te.ErrorCodeAttr.Code)
	}
	return 0
}

func TestAuthRejectsExpiredWrongAndMalformed(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ts := startServer(t, 1, func(c *Config) { c.Now = func() time.Time { return now } })

	cases := []struct {
		name, username, password, reason string
	}{
		{"expired", "", "", reasonExpired},
		{"wrong password", "", "d3Jvbmc=", reasonIntegrity},
		{"other secret", "", "", reasonIntegrity},
		{"malformed", "alice", crypto.TURNPassword(testSecret, "alice"), reasonMalformed},
		{"no user", "1900000000:", crypto.TURNPassword(testSecret, "1900000000:"), reasonMalformed},
	}
	// expired one second ago
	cases[0].username, cases[0].password = crypto.TURNCredentials(testSecret, "alice", -time.Second, now)
	cases[1].username, _ = crypto.TURNCredentials(testSecret, "alice", time.Hour, now)
	cases[2].username, cases[2].password = crypto.TURNCredentials([]byte("another-secret-of-16+bytes"), "alice", time.Hour, now)

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := authFailures(t, ts, tc.reason)
			cl := newClient(t, ts, tc.username, tc.password, false)
			if _, err := allocate(cl); err == nil {
				t.Fatal("allocation succeeded with bad credentials")
			}
			if got := authFailures(t, ts, tc.reason); got <= before {
				t.Fatalf("auth_failures{reason=%q} = %v, want > %v", tc.reason, got, before)
			}
			if ts.AllocationCount() != 0 {
				t.Fatal("an allocation exists after refused auth")
			}
		})
	}

	// The same clock accepts a credential that is still valid.
	u, p := crypto.TURNCredentials(testSecret, "alice", time.Minute, now)
	if _, err := allocate(newClient(t, ts, u, p, false)); err != nil {
		t.Fatalf("valid credential refused: %v", err)
	}
}

func TestAuthenticateRealm(t *testing.T) {
	ts := startServer(t, 1, nil)
	u, _ := crypto.TURNCredentials(testSecret, "alice", time.Hour, time.Now())
	if _, _, ok := ts.authenticate(&turn.RequestAttributes{Username: u, Realm: "other.realm"}); ok {
		t.Fatal("foreign realm accepted")
	}
	if got := authFailures(t, ts, reasonRealm); got != 1 {
		t.Fatalf("auth_failures{realm} = %v, want 1", got)
	}
	user, key, ok := ts.authenticate(&turn.RequestAttributes{Username: u, Realm: testRealm})
	if !ok || user != "alice" {
		t.Fatalf("authenticate = %q, ok=%v; want alice, true", user, ok)
	}
	_, p := crypto.TURNCredentials(testSecret, "alice", time.Hour, time.Now())
	if want := turn.GenerateAuthKey(u, testRealm, p); !bytes.Equal(key, want) {
		t.Fatal("key differs from MD5(username:realm:password)")
	}
}

func TestQuotaPerUser(t *testing.T) {
	ts := startServer(t, 2, func(c *Config) { c.MaxAllocationsPerUser = 2 })
	now := time.Now()
	var relays []net.PacketConn
	for i := range 2 {
		// Different credentials (expiries) of the same user share the quota.
		u, p := crypto.TURNCredentials(testSecret, "bob", time.Hour+time.Duration(i)*time.Minute, now)
		r, err := allocate(newClient(t, ts, u, p, false))
		if err != nil {
			t.Fatalf("allocation %d within quota: %v", i, err)
		}
		relays = append(relays, r)
	}
	u, p := crypto.TURNCredentials(testSecret, "bob", time.Hour, now)
	_, err := allocate(newClient(t, ts, u, p, false))
	if code := turnErrorCode(err); code != int(stun.CodeAllocQuotaReached) {
		t.Fatalf("third allocation: err = %v (code %d), want 486 Allocation Quota Reached", err, code)
	}
	if got := value(t, ts.metrics.quotaRefusals); got != 1 {
		t.Fatalf("quota_refusals = %v, want 1", got)
	}
	// Another user is not affected.
	u2, p2 := crypto.TURNCredentials(testSecret, "carol", time.Hour, now)
	if _, err := allocate(newClient(t, ts, u2, p2, false)); err != nil {
		t.Fatalf("other user refused: %v", err)
	}
	// Freeing one of bob's allocations lets him allocate again.
	relays[0].Close()
	waitFor(t, "bob's allocation freed", func() bool { return ts.quota.count("bob") == 1 })
	if _, err := allocate(newClient(t, ts, u, p, false)); err != nil {
		t.Fatalf("allocation after freeing a slot: %v", err)
	}
	if got := gauge(t, ts); got != 3 {
		t.Fatalf("allocations_active = %v, want 3", got)
	}
}

// TestQuotaConcurrentAcrossSockets races many Allocate requests of one user
// over several SO_REUSEPORT sockets: exactly the quota may succeed.
func TestQuotaConcurrentAcrossSockets(t *testing.T) {
	const limit, clients = 3, 24
	ts := startServer(t, 4, func(c *Config) { c.MaxAllocationsPerUser = limit })
	u, p := crypto.TURNCredentials(testSecret, "dave", time.Hour, time.Now())
	cls := make([]*turn.Client, clients)
	for i := range cls {
		cls[i] = newClient(t, ts, u, p, false)
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		ok      int
		refused int
		other   []error
	)
	for _, cl := range cls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := allocate(cl)
			mu.Lock()
			defer mu.Unlock()
			switch code := turnErrorCode(err); {
			case err == nil:
				ok++
			case code == int(stun.CodeAllocQuotaReached) || code == int(stun.CodeInsufficientCapacity):
				refused++
			default:
				other = append(other, err)
			}
		}()
	}
	wg.Wait()
	if len(other) > 0 {
		t.Fatalf("unexpected errors: %v", other)
	}
	if ok != limit || refused != clients-limit {
		t.Fatalf("succeeded %d, refused %d; want %d and %d", ok, refused, limit, clients-limit)
	}
	if n := ts.quota.count("dave"); n != limit {
		t.Fatalf("quota counts %d, want %d", n, limit)
	}
}

func TestUnlimitedQuota(t *testing.T) {
	ts := startServer(t, 1, func(c *Config) { c.MaxAllocationsPerUser = -1 })
	u, p := crypto.TURNCredentials(testSecret, "erin", time.Hour, time.Now())
	for i := range DefaultMaxAllocationsPerUser + 2 {
		if _, err := allocate(newClient(t, ts, u, p, false)); err != nil {
			t.Fatalf("allocation %d with no limit: %v", i, err)
		}
	}
}

func TestMetricsRegistered(t *testing.T) {
	ts := startServer(t, 1, nil)
	mfs, err := ts.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{
		"keymesh_turn_allocations_active", "keymesh_turn_allocations_total",
		"keymesh_turn_auth_failures_total", "keymesh_turn_quota_refusals_total", "keymesh_turn_request_errors_total",
	} {
		if !names[want] {
			t.Errorf("metric %s not registered (have %v)", want, names)
		}
	}
	// A second server on the same registry is refused, not a panic.
	conn, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer conn.Close()
	if _, err := New(Config{PacketConns: []net.PacketConn{conn}, Secret: testSecret, Registerer: ts.reg}); err == nil {
		t.Fatal("second server on one Registerer accepted")
	}
}
