package pathsock

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// The hard side's birthday sockets hear from the easy side in any order:
// each has its own reader goroutine, and a loaded machine runs them in any
// order. What each socket may hear: a ProbeReply (the easy side answered
// the probe this socket sent) or a Probe (the easy side probes the mapping
// this socket opened; the socket's answer is what makes the easy side take
// that mapping as its direct path). Whatever the order, the socket the easy
// side takes must be the one the hard side keeps, since the others close
// when the punch ends (matrix trial full-cone -> symmetric t87: they
// differed, and the easy side lost its path a second later).

// bdayEvent is one frame from the easy side on birthday socket sock.
type bdayEvent struct {
	sock  int
	probe bool // a Probe (else a ProbeReply)
}

func (e bdayEvent) String() string {
	if e.probe {
		return fmt.Sprintf("probe@%d", e.sock)
	}
	return fmt.Sprintf("reply@%d", e.sock)
}

// permutations calls f with every ordering of evs.
func permutations(evs []bdayEvent, f func([]bdayEvent)) {
	var rec func(int)
	rec = func(k int) {
		if k == len(evs) {
			f(evs)
			return
		}
		for i := k; i < len(evs); i++ {
			evs[k], evs[i] = evs[i], evs[k]
			rec(k + 1)
			evs[k], evs[i] = evs[i], evs[k]
		}
	}
	rec(0)
}

// TestBirthdayEasySideTakesTheKeptSocket plays every order in which three
// birthday sockets hear a Probe and a ProbeReply each through the hard
// side's decisions (birthdayProbeLocked in onProbe, birthdayReplyLocked in
// onProbeReply), and checks that every socket that answered a Probe (the
// only sockets the easy side can take as its path) is the one the hard
// side keeps, and that one is kept.
func TestBirthdayEasySideTakesTheKeptSocket(t *testing.T) {
	easy := netip.MustParseAddrPort("203.0.113.14:42679")
	var evs []bdayEvent
	for i := range 3 {
		evs = append(evs, bdayEvent{i, true}, bdayEvent{i, false})
	}
	orders := 0
	permutations(evs, func(order []bdayEvent) {
		orders++
		pr := &peer{cands: map[netip.AddrPort]*cand{easy: {addr: easy}}}
		pr.route.Store(&route{kind: PathRelay})
		pr.bday = &birthday{done: make(chan struct{})}
		socks := []*extra{{}, {}, {}}
		answered := map[int]bool{}
		for _, ev := range order {
			pr.mu.Lock()
			if ev.probe {
				if pr.birthdayProbeLocked(socks[ev.sock], easy) {
					answered[ev.sock] = true
				}
			} else {
				pr.birthdayReplyLocked(socks[ev.sock])
			}
			pr.mu.Unlock()
		}
		if pr.kept == nil {
			t.Fatalf("%v: no socket kept", order)
		}
		for i := range answered {
			if socks[i] != pr.kept {
				t.Fatalf("%v: socket %d answered the easy side's probe, but the hard side keeps another", order, i)
			}
		}
		if len(answered) == 0 {
			t.Fatalf("%v: the kept socket answered no probe", order)
		}
		select {
		case <-pr.bday.done:
		default:
			t.Fatalf("%v: the punch did not end with a winner", order)
		}
	})
	if orders != 720 {
		t.Fatalf("played %d orders, want 720", orders)
	}
}

// TestBirthdayProbeWinSendsFromWinner: a socket that wins by a Probe makes
// the peer's unproven candidate at the Probe's source go from it, so that
// the hard side's own probes there (its tick) leave by the winner's mapping
// rather than the main socket's; a proven candidate keeps its socket.
func TestBirthdayProbeWinSendsFromWinner(t *testing.T) {
	easy := netip.MustParseAddrPort("203.0.113.14:42679")
	pr := &peer{cands: map[netip.AddrPort]*cand{easy: {addr: easy}}}
	pr.route.Store(&route{kind: PathRelay})
	pr.bday = &birthday{done: make(chan struct{})}
	e := &extra{}
	pr.mu.Lock()
	ok := pr.birthdayProbeLocked(e, easy)
	pr.mu.Unlock()
	if !ok || pr.kept != e || pr.cands[easy].via != e {
		t.Fatalf("probe win: answered %v, kept %p (want %p), candidate via %p", ok, pr.kept, e, pr.cands[easy].via)
	}

	proven := &cand{addr: easy, lastReply: time.Unix(1, 0)}
	pr = &peer{cands: map[netip.AddrPort]*cand{easy: proven}}
	pr.route.Store(&route{kind: PathRelay})
	pr.mu.Lock()
	pr.birthdayProbeLocked(&extra{}, easy)
	pr.mu.Unlock()
	if proven.via != nil {
		t.Fatal("a proven candidate's socket changed")
	}
}

// TestBirthdayRetiredSocketStaysSilent: a socket retired at the end of the
// punch neither answers nor wins.
func TestBirthdayRetiredSocketStaysSilent(t *testing.T) {
	easy := netip.MustParseAddrPort("203.0.113.14:42679")
	pr := &peer{cands: map[netip.AddrPort]*cand{}}
	pr.route.Store(&route{kind: PathRelay})
	e := &extra{}
	e.retired.Store(true)
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.birthdayProbeLocked(e, easy) || pr.birthdayReplyLocked(e) || pr.kept != nil {
		t.Fatal("a retired socket answered or won")
	}
}
