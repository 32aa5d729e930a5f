package pathsock

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/nat"
	"github.com/keymesh/keymesh/internal/wire"
)

// probeFrom seals a Probe from id to b at time t.
func probeFrom(t *testing.T, id *crypto.Identity, b *testSock, tx uint64, at time.Time) []byte {
	t.Helper()
	shared, err := id.SharedKey(b.ID())
	if err != nil {
		t.Fatal(err)
	}
	return wire.SealFrame(nil, id.ID(), shared, wire.Message{Time: at.UnixMilli(), Body: &wire.Probe{TxID: tx, Dest: b.LocalAddrPort()}})
}

// replies reads the ProbeReplies (sealed between id and b) waiting on c,
// by transaction ID, until a read waits longer than wait or the reply to
// until (when not 0) came.
func replies(t *testing.T, c *net.UDPConn, id *crypto.Identity, b *testSock, wait time.Duration, until uint64) map[uint64]bool {
	t.Helper()
	shared, err := id.SharedKey(b.ID())
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint64]bool{}
	buf := make([]byte, 2048)
	for {
		c.SetReadDeadline(time.Now().Add(wait))
		n, err := c.Read(buf)
		if err != nil {
			return got
		}
		sl, err := wire.ParseSealed(buf[:n])
		if err != nil {
			continue
		}
		m, err := sl.Open(shared)
		if err != nil {
			continue
		}
		if r, ok := m.Body.(*wire.ProbeReply); ok {
			got[r.TxID] = true
			if r.TxID == until {
				return got
			}
		}
	}
}

func udpOn(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestProbesAreFreshAndLimited is issue 10's item 10 (peer part): a Probe
// captured from a's traffic and replayed from another source later, or a
// Probe from a key b never met, is not answered; a flood of fresh Probes
// from one unproven source earns at most the per-source burst of replies.
// Each step ends with a fresh Probe from another address (127.0.0.2/3) that
// must be answered: b handles datagrams in order, so whatever it would
// have sent before is there by then.
func TestProbesAreFreshAndLimited(t *testing.T) {
	r := startRelay(t, newTicketKeys(t), "127.0.0.1:0")
	idA := newIdentity(t)
	_, b := pair(t, r, func(c *Config) { c.Identity = idA; c.NoDirect = true }, nil)
	attacker := udpOn(t, "127.0.0.1:0")
	sentinel := udpOn(t, "127.0.0.2:0")
	to := net.UDPAddrFromAddrPort(b.LocalAddrPort())
	send := func(c *net.UDPConn, frame []byte) {
		if _, err := c.WriteToUDP(frame, to); err != nil {
			t.Fatal(err)
		}
	}
	tx := uint64(1000)
	check := func(what string) {
		t.Helper()
		tx++
		send(sentinel, probeFrom(t, idA, b, tx, time.Now()))
		if got := replies(t, sentinel, idA, b, 3*time.Second, tx); !got[tx] {
			t.Fatalf("%s: a fresh probe from a new source was not answered", what)
		}
	}

	// A replay: a's probe, sealed ten minutes ago.
	send(attacker, probeFrom(t, idA, b, 1, time.Now().Add(-10*time.Minute)))
	check("stale")
	if got := replies(t, attacker, idA, b, 50*time.Millisecond, 0); got[1] {
		t.Errorf("a probe sealed ten minutes ago was answered")
	}
	// A stranger's key.
	stranger := newIdentity(t)
	send(attacker, probeFrom(t, stranger, b, 2, time.Now()))
	check("stranger")
	if got := replies(t, attacker, stranger, b, 50*time.Millisecond, 0); got[2] {
		t.Errorf("a probe from a key b never met was answered")
	}
	// A flood of fresh probes from one address.
	const flood = 400
	for i := range flood {
		send(attacker, probeFrom(t, idA, b, uint64(10+i), time.Now()))
	}
	sentinel = udpOn(t, "127.0.0.3:0")
	check("flood")
	got := replies(t, attacker, idA, b, 50*time.Millisecond, 0)
	t.Logf("%d fresh probes from one source: %d answered", flood, len(got))
	if len(got) == 0 {
		t.Errorf("no probe of the flood was answered: a peer behind that address could not punch")
	}
	if len(got) > replyBurst+replyRate {
		t.Errorf("%d of %d probes from one unproven source answered, want at most %d", len(got), flood, replyBurst+replyRate)
	}
}

// TestBirthdaySocketsCapped: a peer behind a symmetric NAT opens
// nat.BirthdaySockets sockets for every easy peer that connects; six fresh
// identities must not make it open more than maxBirthdaySockets in all.
func TestBirthdaySocketsCapped(t *testing.T) {
	victim := newTestSock(t, func(c *Config) {
		c.NAT = func() wire.NAT { return wire.NATAddrPortDepend }
	})
	const attackers = 6
	for range attackers {
		id := newIdentity(t).ID()
		info := wire.PeerInfo{ID: id, Reflexive: netip.MustParseAddrPort("127.0.0.1:9"), NAT: wire.NATEndpointIndep}
		if err := victim.AddPeer(info, time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	st := victim.Stats()
	waitFor(t, 20*time.Second, "the birthday sockets to open", func() bool { return st.BirthdaySockets.Load() >= maxBirthdaySockets })
	// Give the other punches the time they took to open as many.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if n := victim.BirthdaySocketsOpen(); n > maxBirthdaySockets {
			t.Fatalf("%d birthday sockets open for %d identities, want at most %d", n, attackers, maxBirthdaySockets)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := st.BirthdaySockets.Load(); n > maxBirthdaySockets {
		t.Fatalf("%d birthday sockets opened for %d identities, want at most %d", n, attackers, maxBirthdaySockets)
	}
}

// TestCandidateFilter: which addresses a peer may name as its candidates,
// for a socket on every address with one LAN, and one on loopback.
func TestCandidateFilter(t *testing.T) {
	lan := netip.MustParsePrefix("192.168.7.0/24")
	mk := func(listen string) *Sock {
		s, err := newSock(Config{
			Identity:      newIdentity(t),
			ListenAddr:    listen,
			Interfaces:    func() ([]netip.Addr, error) { return []netip.Addr{lan.Addr()}, nil },
			LocalPrefixes: func() ([]netip.Prefix, error) { return []netip.Prefix{lan}, nil },
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	any4, lo := mk("0.0.0.0:0"), mk("127.0.0.1:0")
	for _, tc := range []struct {
		addr           string
		any, attested  bool // on the 0.0.0.0 socket: named, and as the rendezvous saw it
		loopbackSocket bool
	}{
		{"198.51.100.7", true, true, true},
		{"192.168.7.20", true, true, true}, // this peer's LAN
		{"192.168.9.20", false, true, false},
		{"10.0.0.1", false, true, false},
		{"172.16.0.1", false, true, false},
		{"100.64.0.1", false, true, false},
		{"127.0.0.1", false, false, true},
		{"169.254.169.254", false, false, false},
		{"224.0.0.1", false, false, false},
		{"255.255.255.255", false, false, false},
		{"0.0.0.0", false, false, false},
		{"0.1.2.3", false, false, false},
		{"fd00::1", false, true, false},
		{"fe80::1", false, false, false},
		{"::1", false, false, true},
		{"2001:db8::1", true, true, true},
	} {
		a := netip.MustParseAddr(tc.addr)
		if got := any4.candOK(a, false); got != tc.any {
			t.Errorf("%s named by a peer: %v, want %v", a, got, tc.any)
		}
		if got := any4.candOK(a, true); got != tc.attested {
			t.Errorf("%s seen by the rendezvous: %v, want %v", a, got, tc.attested)
		}
		if got := lo.candOK(a, false); got != tc.loopbackSocket {
			t.Errorf("%s named to a loopback socket: %v, want %v", a, got, tc.loopbackSocket)
		}
	}
}

// TestBirthdaySpraysCapped: an easy-NAT peer sprays nat.BirthdayProbes
// probes at a hard-NAT peer's address; identities claiming a hard NAT must
// not make it run more than maxSprays sprays at once, nor one peer twice
// within punchWindow.
func TestBirthdaySpraysCapped(t *testing.T) {
	victim := newTestSock(t, func(c *Config) {
		c.NAT = func() wire.NAT { return wire.NATEndpointIndep }
	})
	const attackers = 5
	var infos []wire.PeerInfo
	for i := range attackers {
		infos = append(infos, wire.PeerInfo{ID: newIdentity(t).ID(), Reflexive: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 1, byte(i + 1)}), 9), NAT: wire.NATAddrPortDepend})
	}
	for _, info := range infos {
		if err := victim.AddPeer(info, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if n := victim.sprays.Load(); n > maxSprays {
		t.Fatalf("%d sprays running for %d identities, want at most %d", n, attackers, maxSprays)
	}
	st := victim.Stats()
	waitFor(t, 30*time.Second, "the sprays to end", func() bool { return victim.sprays.Load() == 0 })
	// The same identities again, at once: within punchWindow.
	for _, info := range infos {
		if err := victim.AddPeer(info, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "the sprays to end", func() bool { return victim.sprays.Load() == 0 })
	if n := st.BirthdayProbes.Load(); n > maxSprays*nat.BirthdayProbes {
		t.Errorf("%d birthday probes sprayed for %d identities (each twice), want at most %d", n, attackers, maxSprays*nat.BirthdayProbes)
	}
	t.Logf("%d identities, each punching twice: %d birthday probes", attackers, st.BirthdayProbes.Load())
}
