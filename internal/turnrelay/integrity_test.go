package turnrelay

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/keymesh/keymesh/internal/crypto"
)

// tryRequest sends an authenticated request of method from c (whose
// realm and nonce are known) up to three times, waiting a second for each
// answer, and returns how many it sent before a success, or 0.
func tryRequest(c *rawClient, method stun.Method, attrs ...stun.Setter) int {
	c.t.Helper()
	setters := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, attrs...)
	setters = append(setters, stun.NewUsername(c.user), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
		stun.NewLongTermIntegrity(c.user, c.realm, c.pass), stun.Fingerprint)
	m := stun.MustBuild(setters...)
	for try := 1; try <= 3; try++ {
		c.send(m.Raw)
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			b, err := c.read(time.Until(deadline))
			if err != nil {
				break
			}
			r := &stun.Message{Raw: b}
			if r.Decode() == nil && r.TransactionID == m.TransactionID {
				if r.Type.Class != stun.ClassSuccessResponse {
					return 0
				}
				return try
			}
		}
	}
	return 0
}

// miFloodPool returns Allocates as turn-mi-flood sends them: the server's
// realm and a valid nonce (from a 401 to the attacker's own address),
// unexpired random REST user names and a wrong MESSAGE-INTEGRITY.
func miFloodPool(t *testing.T, server string, now time.Time) [][]byte {
	t.Helper()
	c := dialRaw(t, "udp", server, "", "")
	r := c.roundTrip(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedTransport(17)))
	var realm stun.Realm
	var nonce stun.Nonce
	if realm.GetFrom(r) != nil || nonce.GetFrom(r) != nil {
		t.Fatalf("the attacker's 401 has no realm or nonce: %v", r)
	}
	pool := make([][]byte, 256)
	for i := range pool {
		user, _ := crypto.TURNCredentials(testSecret, hex.EncodeToString(binary.LittleEndian.AppendUint64(nil, rand.Uint64())), time.Hour, now)
		m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedTransport(17),
			stun.NewUsername(user), realm, nonce, stun.NewLongTermIntegrity(user, realm.String(), "wrong password"))
		pool[i] = m.Raw
	}
	return pool
}

// TestMIFloodLeavesAllocationsWorking: while a goroutine floods the TURN
// socket from 32 other sources with Allocates carrying a valid nonce and
// realm, unexpired user names and a wrong MESSAGE-INTEGRITY (the
// turn-mi-flood attack), a client that holds an allocation keeps
// refreshing it, binding a channel and creating permissions: every one of
// its 30 requests succeeds, at least 27 at their first send. No flood request is answered (pion answered
// each with a 400), and on a clock that stands still the guard checks no
// more of them than the integrity burst; the rest are dropped unchecked.
func TestMIFloodLeavesAllocationsWorking(t *testing.T) {
	const burst = 50
	now := time.Now()
	ts := startServer(t, 1, func(c *Config) {
		c.Now = func() time.Time { return now }
		c.IntegrityRate, c.IntegrityBurst = 1, burst
	})
	user, pass := crypto.TURNCredentials(testSecret, "legit", time.Hour, now)
	legit := dialRaw(t, "udp", ts.udp, user, pass)
	legit.allocateRaw(17) // takes one check from the budget, then its source is verified
	peer := echoPeer(t)

	pool := miFloodPool(t, ts.udp, now)
	srv, err := net.ResolveUDPAddr("udp", ts.udp)
	if err != nil {
		t.Fatal(err)
	}
	var bots []*net.UDPConn
	for i := range 32 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 1, byte(i+1))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		bots = append(bots, c)
	}
	var sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 0, 256)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			b := append(buf[:0], pool[i%len(pool)]...)
			binary.LittleEndian.PutUint64(b[8:16], rand.Uint64()) // a fresh transaction ID
			if _, err := bots[i%len(bots)].WriteToUDP(b, srv); err == nil {
				sent.Add(1)
			}
		}
	}()
	stopFlood := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopFlood)
	waitFor(t, "the flood to start", func() bool { return sent.Load() >= 20_000 })

	ok, first := 0, 0
	for i := range 30 {
		var sends int
		switch i % 3 {
		case 0:
			sends = tryRequest(legit, stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 2, 88}})
		case 1:
			sends = tryRequest(legit, stun.MethodChannelBind, channelNumber(0x4000), peerAddr(peer))
		case 2:
			sends = tryRequest(legit, stun.MethodCreatePermission, peerAddr(peer))
		}
		if sends > 0 {
			ok++
		}
		if sends == 1 {
			first++
		}
	}
	stopFlood()
	if ok != 30 {
		t.Errorf("%d of 30 requests of a client holding an allocation succeeded during the flood, want all", ok)
	}
	if first < 27 {
		t.Errorf("%d of 30 requests of a client holding an allocation were answered at their first send, want at least 27", first)
	}

	answers := 0
	buf := make([]byte, 2048)
	for _, c := range bots {
		for {
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, _, err := c.ReadFromUDP(buf); err != nil {
				break
			}
			answers++
		}
	}
	if answers != 0 {
		t.Errorf("the flood's spoofed sources got %d answers, want none", answers)
	}
	checked := authFailures(t, ts, reasonIntegrity)
	unchecked := value(t, ts.metrics.dropped.WithLabelValues(dropIntegrity))
	if checked > burst-1 {
		t.Errorf("the guard checked %v flood requests' integrity on a stopped clock, want at most the burst left (%d)", checked, burst-1)
	}
	if unchecked < 10_000 {
		t.Errorf("dropped{%s} = %v of %d flood requests sent, want the bulk of them", dropIntegrity, unchecked, sent.Load())
	}
	t.Logf("flood: %d sent, %v checked, %v dropped unchecked", sent.Load(), checked, unchecked)
}

// TestIntegrityCheckAgreesWithPion: the guard's parse and HMAC accept
// what pion's MESSAGE-INTEGRITY check accepts and refuse a wrong key, a
// changed byte before the attribute and a truncated value, for messages
// with attributes after MESSAGE-INTEGRITY (FINGERPRINT) too.
func TestIntegrityCheckAgreesWithPion(t *testing.T) {
	key := stun.NewLongTermIntegrity("1:u", "realm", "pass")
	for _, tc := range []struct {
		name string
		m    *stun.Message
	}{
		{"allocate", stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedTransport(17),
			stun.NewUsername("1:u"), stun.NewRealm("realm"), stun.NewNonce("nonce"), key)},
		{"fingerprint after", stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest),
			stun.NewUsername("1:u"), stun.NewRealm("realm"), stun.NewNonce("n"), key, stun.Fingerprint)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.m.Raw
			f, ok := parseAuth(b)
			if !ok || string(f.username) != "1:u" || string(f.realm) != "realm" || f.mi == nil {
				t.Fatalf("parseAuth = %+v, %v", f, ok)
			}
			if !integrityValid(b, f, key) {
				t.Error("a valid MESSAGE-INTEGRITY refused")
			}
			if integrityValid(b, f, stun.NewLongTermIntegrity("1:u", "realm", "other")) {
				t.Error("a wrong key accepted")
			}
			bad := append([]byte(nil), b...)
			bad[f.miOff-1] ^= 1
			if fb, _ := parseAuth(bad); integrityValid(bad, fb, key) {
				t.Error("a changed byte accepted")
			}
			short := f
			short.mi = f.mi[:miLen-1]
			if integrityValid(b, short, key) {
				t.Error("a short value accepted")
			}
		})
	}
}

// FuzzParseAuth: parseAuth never panics, accepts exactly what pion's
// decoder accepts, reads the USERNAME and REALM pion reads, and its check agrees with pion's MESSAGE-INTEGRITY
// check for a fixed key.
func FuzzParseAuth(f *testing.F) {
	key := stun.NewLongTermIntegrity("1:u", "realm", "pass")
	f.Add(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedTransport(17),
		stun.NewUsername("1:u"), stun.NewRealm("realm"), stun.NewNonce("nonce"), key, stun.Fingerprint).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedTransport(17)).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest),
		stun.NewUsername("1:u"), stun.NewRealm("realm"), stun.NewShortTermIntegrity("x")).Raw)
	f.Add([]byte{0, 1, 0, 4, 0x21, 0x12, 0xA4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 20})
	f.Fuzz(func(t *testing.T, b []byte) {
		fields, ok := parseAuth(b)
		m := &stun.Message{Raw: append([]byte(nil), b...)}
		err := m.Decode()
		if ok != (err == nil) {
			t.Fatalf("parseAuth ok=%v, pion's decode: %v", ok, err)
		}
		if !ok {
			return
		}
		if (fields.mi != nil) != m.Contains(stun.AttrMessageIntegrity) {
			t.Fatalf("parseAuth found MESSAGE-INTEGRITY: %v; pion: %v", fields.mi != nil, m.Contains(stun.AttrMessageIntegrity))
		}
		for _, a := range []struct {
			t   stun.AttrType
			got []byte
		}{{stun.AttrUsername, fields.username}, {stun.AttrRealm, fields.realm}} {
			v, err := m.Get(a.t)
			if (err == nil) != (a.got != nil) || string(v) != string(a.got) {
				t.Fatalf("%v: parseAuth %q, pion %q (%v)", a.t, a.got, v, err)
			}
		}
		if fields.mi == nil {
			return
		}
		if got, want := integrityValid(b, fields, key), key.Check(m) == nil; got != want {
			t.Fatalf("integrityValid = %v, pion's check %v", got, want)
		}
	})
}

// TestVerifiedSourcesBounded: the table of verified sources holds at most
// its size, forgets expired entries first and arbitrary ones after, and
// never refuses a new source.
func TestVerifiedSourcesBounded(t *testing.T) {
	v := newVerifiedSources(100, 64)
	src := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), uint16(1000+i))
	}
	for i := range 64 {
		v.add(src(i), 0)
	}
	if !v.has(src(3), 99) || v.has(src(3), 100) {
		t.Error("an entry's lifetime is not its ttl")
	}
	v.add(src(100), 200) // all others expired
	if v.len() != 1 || !v.has(src(100), 200) {
		t.Errorf("after expiry: %d entries, want only the new one", v.len())
	}
	for i := range 300 {
		v.add(src(i), 300)
		if v.len() > 64 {
			t.Fatalf("%d entries, cap 64", v.len())
		}
		if !v.has(src(i), 300) {
			t.Fatalf("source %d refused", i)
		}
	}
}

// BenchmarkCheckIntegrity: the guard's check of one flood request (a
// well-formed, unexpired user name and a wrong MESSAGE-INTEGRITY), from a
// verified source so that no budget stops it.
func BenchmarkCheckIntegrity(b *testing.B) {
	now := time.Now()
	m, err := newMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{cfg: Config{Realm: testRealm, Secret: testSecret, Now: time.Now}, metrics: m,
		verified: newVerifiedSources(int64(time.Hour), 16)}
	user, _ := crypto.TURNCredentials(testSecret, "bench", time.Hour, now)
	req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedTransport(17),
		stun.NewUsername(user), stun.NewRealm(testRealm), stun.NewNonce("0123456789abcdef"),
		stun.NewLongTermIntegrity(user, testRealm, "wrong")).Raw
	src := netip.MustParseAddrPort("198.51.100.1:3478")
	s.verified.add(src, now.UnixNano())
	b.ReportAllocs()
	for b.Loop() {
		f, _ := parseAuth(req)
		if s.checkIntegrity(req, f, src) {
			b.Fatal("a wrong MESSAGE-INTEGRITY passed")
		}
	}
}
