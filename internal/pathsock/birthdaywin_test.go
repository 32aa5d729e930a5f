package pathsock

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/wire"
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

// TestBirthdayOnlyKeptSocketAnswers plays matrix trial t87's order through
// the socket shell, on real loopback sockets: the easy side's Probe to
// birthday socket 2 is read before its ProbeReply on socket 1 (which wins),
// then its Probes to sockets 1 and 0 and its ProbeReplies on sockets 2 and
// 0. Every ProbeReply the easy side receives must come from the socket the
// hard side keeps.
func TestBirthdayOnlyKeptSocketAnswers(t *testing.T) {
	hard := newTestSock(t, nil)
	easyID := newIdentity(t)
	easy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer easy.Close()
	easyAt := easy.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := hard.AddPeer(wire.PeerInfo{ID: easyID.ID(), Reflexive: easyAt}, time.Now()); err != nil {
		t.Fatal(err)
	}
	pr := hard.peerByID(easyID.ID())
	var socks []*extra
	for range 3 {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		socks = append(socks, &extra{conn: c})
	}
	pr.mu.Lock()
	pr.bday = &birthday{done: make(chan struct{})}
	pr.mu.Unlock()
	// The hard side's birthday probes, one from each socket.
	var txs []uint64
	for _, e := range socks {
		txs = append(txs, hard.probe(pr, true, easyAt, nil, e, false))
	}
	probe := func(i int) {
		dest := socks[i].conn.LocalAddr().(*net.UDPAddr).AddrPort()
		hard.onProbe(easyID.ID(), pr.shared, &wire.Probe{TxID: newTxID(), Dest: dest}, easyAt, true, socks[i])
	}
	reply := func(i int) {
		hard.onProbeReply(easyID.ID(), &wire.ProbeReply{TxID: txs[i], Observed: easyAt}, true, socks[i])
	}
	probe(2)
	reply(1)
	probe(1)
	probe(0)
	reply(2)
	reply(0)

	pr.mu.Lock()
	kept := pr.kept
	pr.mu.Unlock()
	if kept != socks[2] && kept != socks[1] {
		t.Fatalf("kept socket %p, want socket 2 or 1", kept)
	}
	keptPort := kept.conn.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	// Everything sent to the easy side: the sockets' probes and replies,
	// and the main socket's punching probes.
	answers := 0
	buf := make([]byte, 2048)
	for {
		easy.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, from, err := easy.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		sl, err := wire.ParseSealed(buf[:n])
		if err != nil {
			continue
		}
		m, err := sl.Open(pr.shared)
		if err != nil {
			t.Fatalf("a frame from %v does not open: %v", from, err)
		}
		if _, ok := m.Body.(*wire.ProbeReply); !ok {
			continue
		}
		if from.Port() != keptPort {
			t.Fatalf("a ProbeReply came from port %d; the hard side keeps port %d", from.Port(), keptPort)
		}
		answers++
	}
	if answers == 0 {
		t.Fatal("the kept socket answered none of the easy side's probes")
	}
}
