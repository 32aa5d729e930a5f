package pathsock

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/nat"
)

// virtClock is a clock the test moves by hand.
type virtClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *virtClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *virtClock) add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// forced reads and clears the relay layer's rebind request.
func (s *Sock) forced() bool {
	s.relay.mu.Lock()
	defer s.relay.mu.Unlock()
	f := s.relay.force
	s.relay.force = false
	return f
}

// TestPathLostRebindsAndReregisters: a NAT that forgets its mappings kills
// the direct path and, silently, the relay ticket this peer published (it
// names the forgotten port). When the direct path is declared lost, the
// layer must rebind the relay and re-register at once, not at the next
// 20 s rebind; and only once per lostReactEvery however often paths fail.
// On virtual time: the layer's goroutines do not run, the test ticks it.
func TestPathLostRebindsAndReregisters(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	clock := &virtClock{t: time.Unix(1_800_000_000, 0)}
	changed := make(chan struct{}, 8)
	s, err := newSock(Config{
		Identity:      newIdentity(t),
		Conn:          conn,
		Now:           clock.now,
		Interfaces:    func() ([]netip.Addr, error) { return nil, nil },
		OnLocalChange: func() { changed <- struct{}{} },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	remote := sink.LocalAddr().(*net.UDPAddr).AddrPort()

	// A peer on a direct path, with traffic flowing.
	direct := func() {
		pr, err := s.ensurePeer(newIdentity(t).ID())
		if err != nil {
			t.Fatal(err)
		}
		pr.mu.Lock()
		directLocked(t, s, pr, remote, clock.now())
		pr.mu.Unlock()
	}
	direct()
	s.forced()

	// Probes go unanswered: tick on virtual time until the path is lost.
	ticks := 0
	for path := PathDirect; path == PathDirect; ticks++ {
		if ticks > 100 {
			t.Fatal("the direct path was never declared lost")
		}
		s.tickPeers(clock.add(maintenanceTick))
		path = s.Peers()[0].Path
	}
	if lostAfter := time.Duration(ticks) * maintenanceTick; lostAfter > nat.DeadAfter+2*nat.ActiveProbeInterval {
		t.Fatalf("the direct path was declared lost after %s of silence", lostAfter)
	}
	if !s.forced() {
		t.Fatal("a lost direct path did not rebind the relay at once")
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("a lost direct path did not re-register (OnLocalChange)")
	}

	// Another path lost within lostReactEvery: no second reaction; one
	// lost after it: reacted to.
	first := s.lostAt.Load()
	loseNow := func() {
		s.RemovePeer(s.Peers()[0].ID)
		direct()
		pr := s.peers()[0]
		pr.mu.Lock()
		c := pr.cands[remote]
		c.unanswered, c.firstUnanswered = nat.MissedProbes, clock.now().Add(-nat.DeadAfter)
		pr.mu.Unlock()
		s.tickPeers(clock.add(maintenanceTick))
		if p := s.Peers()[0].Path; p == PathDirect {
			t.Fatalf("path %s after a dead path's tick", p)
		}
	}
	loseNow()
	if s.lostAt.Load() != first || s.forced() {
		t.Fatal("a second loss within lostReactEvery was reacted to again")
	}
	clock.add(lostReactEvery)
	loseNow()
	if s.lostAt.Load() == first || !s.forced() {
		t.Fatal("a loss after lostReactEvery was not reacted to")
	}
}

// directLocked puts pr (its lock held) on a direct path to remote at now,
// as if remote had answered its probes and traffic were flowing.
func directLocked(t *testing.T, s *Sock, pr *peer, remote netip.AddrPort, now time.Time) {
	t.Helper()
	c := s.addCandLocked(pr, remote, false, true, now)
	if c == nil {
		pr.mu.Unlock()
		t.Fatal("the loopback candidate was refused")
	}
	c.lastReply, c.lastSent, c.rtt = now, now, time.Millisecond
	pr.route.Store(&route{kind: PathDirect, addr: remote})
	pr.lastSent.Store(now.UnixNano())
}
