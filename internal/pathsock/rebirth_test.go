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

// A NAT that forgets its mappings kills a direct path that birthday
// punching found; only a new birthday punch finds another. Each side
// starts its side of it on its own loss: the side that notices the loss
// second has heard the peer's PathUpdate while its own path still looked
// up (startBirthday refuses while the route is direct), and the peer's
// next announcement comes a second later (loadtest faults
// nat-flush/symmetric: the easy side sprayed 1.1 s after the loss, best
// path back 1.8-2.1 s in 4 runs of 20).

// TestFSMBirthdayLossPunchesAgain: the tick that gives up a birthday
// peer's direct path for the relay asks the shell for a new birthday punch
// at once (rebirth), and only that tick; not when another direct path
// takes over, nor for a peer that does not punch by the birthday paradox.
func TestFSMBirthdayLossPunchesAgain(t *testing.T) {
	for _, tc := range []struct {
		name     string
		birthday bool
		other    bool // another live direct candidate
		want     bool
	}{
		{"birthday peer, to the relay", true, false, true},
		{"birthday peer, to another direct path", true, true, false},
		{"plain probing peer", false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFSMSim()
			f.env.birthday = tc.birthday
			f.warm(time.Second)
			if tc.other {
				other := netip.MustParseAddrPort("198.51.100.8:4000")
				f.pr.mu.Lock()
				f.pr.cands[other] = &cand{addr: other, added: f.now, lastReply: f.now, lastSent: f.now, rtt: 2 * time.Millisecond}
				f.pr.mu.Unlock()
			}
			f.directUp = false
			cut := f.now
			f.until(t, "the direct path lost", 5*time.Second, func(r tickResult) bool {
				if r.rebirth && r.lost == nil {
					t.Fatal("a new birthday punch asked for without a loss")
				}
				return r.lost != nil
			})
			res := f.lastRes
			if res.rebirth != tc.want {
				t.Fatalf("rebirth %v at the loss (route now %s), want %v", res.rebirth, res.now.kind, tc.want)
			}
			// The loss itself comes within half a second of the cut
			// (liveness.go): the punch asked for with it is not later.
			if took := f.now.Sub(cut); tc.want && took > 500*time.Millisecond {
				t.Fatalf("the new punch was asked for %s after the cut, want within 500ms", took)
			}
			// Later ticks ask again only with a loss of their own (the
			// other direct path, silent too, to the relay).
			for range 50 {
				if r := f.tick(); r.rebirth && (r.lost == nil || r.now.kind == PathDirect) {
					t.Fatal("a new birthday punch asked for again without a loss to the relay")
				}
			}
		})
	}
}

// TestSprayStart: a punch the rendezvous started sprays sprayDelay after
// the start both sides got (the hard side opens its sockets first); one
// started by this side's own loss sprays at once.
func TestSprayStart(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	if got := sprayStart(t0, false); !got.Equal(t0.Add(sprayDelay)) {
		t.Fatalf("scheduled punch: spray at %s, want start+%s", got.Sub(t0), sprayDelay)
	}
	if got := sprayStart(t0, true); !got.Equal(t0) {
		t.Fatalf("punch after a loss: spray at start%+v, want at once", got.Sub(t0))
	}
}

// TestLostBirthdayPathPunchesAtOnce: the socket shell, on virtual time: a
// peer whose direct path came from birthday punching loses it (its
// probes go unanswered); the tick that declares it lost starts this
// side's birthday punch (the easy side's spray, the hard side's sockets),
// with no PathUpdate from the peer. A pair that punches by plain probing
// starts none. The earlier punch began 3 s before (as in loadtest
// faults): within punchWindow, beyond birthdayAgainAfter.
func TestLostBirthdayPathPunchesAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name       string
		mine, peer wire.NAT
		easy, hard bool // which side of a punch should start
	}{
		{"easy side", wire.NATEndpointIndep, wire.NATAddrPortDepend, true, false},
		{"hard side", wire.NATAddrPortDepend, wire.NATEndpointIndep, false, true},
		{"plain probing", wire.NATEndpointIndep, wire.NATEndpointIndep, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := udpOn(t, "127.0.0.1:0")
			// The peer's address: its probes land here, unanswered.
			sink := udpOn(t, "127.0.0.1:0")
			remote := sink.LocalAddr().(*net.UDPAddr).AddrPort()
			clock := &virtClock{t: time.Unix(1_800_000_000, 0)}
			s, err := newSock(Config{
				Identity:   newIdentity(t),
				Conn:       conn,
				Now:        clock.now,
				NAT:        func() wire.NAT { return tc.mine },
				Interfaces: func() ([]netip.Addr, error) { return nil, nil },
				ListenExtra: func() (*net.UDPConn, error) {
					return net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			pr, err := s.ensurePeer(newIdentity(t).ID())
			if err != nil {
				t.Fatal(err)
			}
			now := clock.now()
			pr.mu.Lock()
			// Its reflexive address, the birthday target: the easy
			// side sprays its random ports, off 127.0.0.1's services.
			pr.nat, pr.reflexive = tc.peer, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 1, 9}), 9)
			pr.tickets = [][]byte{make([]byte, crypto.TicketSize)}
			pr.bdayAt = now.Add(-3 * time.Second)
			directLocked(t, s, pr, remote, now)
			pr.mu.Unlock()

			var lost time.Time
			for ticks := 0; s.Peers()[0].Path == PathDirect; ticks++ {
				if ticks > 100 {
					t.Fatal("the direct path was never declared lost")
				}
				lost = clock.add(maintenanceTick)
				s.tickPeers(lost)
			}
			pr.mu.Lock()
			bdayAt, sprayUntil, hard := pr.bdayAt, pr.sprayUntil, pr.bday != nil
			pr.mu.Unlock()
			easy := s.sprays.Load() > 0
			if easy != tc.easy || hard != tc.hard {
				t.Fatalf("at the loss: spray running %v, hard side's punch running %v; want %v, %v", easy, hard, tc.easy, tc.hard)
			}
			if !tc.easy && !tc.hard {
				return
			}
			if !bdayAt.Equal(lost) {
				t.Fatalf("the punch started %s after the loss tick", bdayAt.Sub(lost))
			}
			if tc.easy && !sprayUntil.Equal(lost.Add(nat.BirthdayWindow)) {
				t.Fatalf("spray window ends %s after the loss, want %s", sprayUntil.Sub(lost), nat.BirthdayWindow)
			}
			// The clock stands still: the spray's start is due at once
			// (sprayStart), and the hard side probes from its sockets.
			waitFor(t, 10*time.Second, "birthday probes", func() bool {
				if tc.easy {
					return s.Stats().BirthdayProbes.Load() > 0
				}
				return s.BirthdaySocketsOpen() > 0
			})
		})
	}
}
