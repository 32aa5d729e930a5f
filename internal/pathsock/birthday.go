package pathsock

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keymesh/keymesh/internal/nat"
)

// Birthday-paradox punching, for a peer whose NAT maps per destination
// ("hard") against one whose NAT does not ("easy"). The hard side opens
// nat.BirthdaySockets extra sockets and probes the easy side's reflexive
// address from each, every nat.BirthdayResend: each gets its own random
// public port. The easy side probes random ports of the hard side's public
// address from its main socket. Once a spray probe hits one of the hard
// side's mappings, both NATs let that pair of addresses through: the hard
// side answers and probes back from that socket, which becomes the peer's
// direct path (route.via) for as long as the path lives.

// Pacing of the two sides' sends.
const (
	// hardBurst probes go out back to back from the hard side's sockets,
	// hardBurstGap apart: 256 sockets take about 100 ms.
	hardBurst    = 32
	hardBurstGap = 12 * time.Millisecond
	// sprayBurst probes of the easy side go out together, at the pace of
	// nat.BirthdayRate.
	sprayBurst = 10
	// sprayDelay lets the hard side open its sockets first.
	sprayDelay = 100 * time.Millisecond
)

// extra is one birthday socket of the hard side.
type extra struct {
	conn    *net.UDPConn
	closed  atomic.Bool
	retired atomic.Bool // set under the peer's lock before closing: it can no longer win
}

func (e *extra) close() {
	if !e.closed.Swap(true) {
		e.conn.Close()
	}
}

// birthday is the hard side's running punch with one peer.
type birthday struct {
	done chan struct{} // closed once a socket won
	once sync.Once
}

func (b *birthday) finish() { b.once.Do(func() { close(b.done) }) }

// listenExtraDefault opens a socket on the main socket's address, any port.
func (s *Sock) listenExtraDefault() (*net.UDPConn, error) {
	a := s.LocalAddrPort()
	return net.ListenUDP("udp", &net.UDPAddr{IP: a.Addr().AsSlice(), Zone: a.Addr().Zone()})
}

// sendVia writes b to addr from via (nil: the main socket).
func (s *Sock) sendVia(b []byte, to netip.AddrPort, via *extra) bool {
	if via == nil {
		return s.send(b, to)
	}
	if _, err := via.conn.WriteToUDPAddrPort(b, to); err != nil {
		s.stats.Dropped.Add(1)
		return false
	}
	return true
}

// startBirthday starts the birthday side of strategy st with pr at start,
// unless one runs already or a direct path exists. lost says that this
// side's direct path to pr was just lost (tickPeers): there is no start
// the rendezvous gave both sides to meet, the peer's side starts on its own
// loss or on this side's PathUpdate, so the easy side sprays at once
// rather than sprayDelay after start.
func (s *Sock) startBirthday(pr *peer, st nat.Strategy, start time.Time, lost bool) {
	if st != nat.StrategyBirthdayHard && st != nat.StrategyBirthdayEasy {
		return
	}
	now := s.now()
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.route.Load().kind == PathDirect || !pr.reflexive.IsValid() || !s.canSendTo(pr.reflexive) {
		return
	}
	// The target is the reflexive address the rendezvous saw; one
	// birthday punch per peer and punchWindow.
	target := pr.reflexive
	if pr.bday != nil || now.Before(pr.sprayUntil) || (!pr.bdayAt.IsZero() && now.Sub(pr.bdayAt) < punchWindow) {
		return
	}
	if st == nat.StrategyBirthdayHard {
		if pr.kept != nil {
			// The socket an earlier punch kept has lost its path (the
			// route is not direct): the new punch's winner replaces it.
			pr.kept.retired.Store(true)
			s.dropExtra(pr.kept)
			pr.forgetViaLocked(pr.kept)
			pr.kept, pr.keptLost = nil, time.Time{}
		}
		pr.bdayAt = now
		b := &birthday{done: make(chan struct{})}
		pr.bday = b
		s.wg.Add(1)
		go s.birthdayHard(pr, b, target, start)
		return
	}
	if s.sprays.Add(1) > int32(s.cfg.Limits.MaxSprays) {
		s.sprays.Add(-1)
		s.log.Debug("birthday punching (easy side): too many sprays running", "peer", pr.id.Short())
		return
	}
	pr.bdayAt = now
	pr.sprayUntil = now.Add(nat.BirthdayWindow)
	sprayAt := sprayStart(start, lost)
	s.log.Debug("birthday punching (easy side) starts", "peer", pr.id.Short(), "lost", lost, "in", sprayAt.Sub(now))
	s.wg.Add(1)
	go s.birthdayEasy(pr, target.Addr(), sprayAt)
}

// sprayStart is when the easy side's spray of a punch that starts at start
// begins: sprayDelay later, so that the hard side, which got the same
// start from the rendezvous, has opened its sockets; at once after this
// side's direct path was lost (lost), as no start is shared then and the
// hard side opens its sockets on its own loss.
func sprayStart(start time.Time, lost bool) time.Time {
	if lost {
		return start
	}
	return start.Add(sprayDelay)
}

// birthdayAgainAfter is how soon after the start of a peer's last
// birthday punch a lost direct path lets it punch again (punchWindow
// otherwise).
const birthdayAgainAfter = 2 * time.Second

// birthdayAgainLocked lets the next startBirthday run birthdayAgainAfter after
// the last one started, rather than punchWindow: the direct path it found
// was lost. pr.mu is held.
func (pr *peer) birthdayAgainLocked() {
	if !pr.bdayAt.IsZero() {
		pr.bdayAt = pr.bdayAt.Add(birthdayAgainAfter - punchWindow)
	}
	// An easy side's spray ended when the path opened; its window no
	// longer holds the next one back.
	pr.sprayUntil = time.Time{}
}

// One winner per punch, on both sides. The hard side's sockets hear from
// the peer in any order (one reader goroutine each), and the easy side
// takes as its path the first of them whose ProbeReply it reads. So the
// first birthday socket to hear an authenticated frame from the peer (a
// ProbeReply: birthdayReplyLocked, or a Probe: birthdayProbeLocked) wins,
// and only the winner answers the peer from then on: the easy side's route
// can only come up on the socket the hard side keeps. Were a loser to
// answer a Probe, the easy side could take it as its path, and lose it when
// the punch ends and the losers close (matrix trial full-cone ->
// symmetric: the hard side kept one socket, the easy side sent to
// another, lost it a second later and stayed on the relay).

// birthdayReplyLocked decides, for an authenticated ProbeReply from the peer
// on birthday socket via, whether it counts: via is the winner, or the
// first to hear from the peer (it wins). pr.mu is held.
func (pr *peer) birthdayReplyLocked(via *extra) bool {
	if via.retired.Load() || (pr.kept != nil && pr.kept != via) {
		return false // a socket being closed, or a later hit: the first one won
	}
	pr.wonBirthdayLocked(via)
	return true
}

// birthdayProbeLocked decides, for an authenticated Probe from the peer at
// from on birthday socket via, whether to answer it (and probe back) from
// via: via is the winner, or the first to hear from the peer (it wins, and
// the peer's candidate at from is probed from it). pr.mu is held.
func (pr *peer) birthdayProbeLocked(via *extra, from netip.AddrPort) bool {
	if !pr.birthdayReplyLocked(via) {
		return false
	}
	if c := pr.cands[from]; c != nil && c.lastReply.IsZero() {
		// Unproven from any other socket: the winner's mapping is the
		// one the peer reaches.
		c.via = via
	}
	return true
}

// wonBirthdayLocked keeps the socket via that heard from the peer and ends
// the punch. pr.mu is held.
func (pr *peer) wonBirthdayLocked(via *extra) {
	pr.kept, pr.keptLost = via, time.Time{}
	if pr.bday != nil {
		pr.bday.finish()
	}
}

// addExtra tracks a birthday socket; false once the layer is closed.
func (s *Sock) addExtra(e *extra) bool {
	s.extraMu.Lock()
	defer s.extraMu.Unlock()
	if s.isClosed() || len(s.extras) >= s.cfg.Limits.MaxBirthdaySockets {
		return false
	}
	s.extras[e] = struct{}{}
	return true
}

func (s *Sock) dropExtra(e *extra) {
	s.extraMu.Lock()
	delete(s.extras, e)
	s.extraMu.Unlock()
	e.close()
}

// closeExtras closes every birthday socket (Close).
func (s *Sock) closeExtras() {
	s.extraMu.Lock()
	defer s.extraMu.Unlock()
	for e := range s.extras {
		e.close()
		delete(s.extras, e)
	}
}

// readExtra reads one birthday socket until it is closed.
func (s *Sock) readExtra(e *extra) {
	defer s.wg.Done()
	for {
		bp := s.getBuf()
		n, from, err := e.conn.ReadFromUDPAddrPort(*bp)
		if err != nil {
			s.putBuf(bp)
			if e.closed.Load() || s.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.handleVia(bp, n, unmap(from), e)
	}
}

// sleep waits d; false when the layer closed or stop fired. It is the
// shell's wait (a real timer): callers compute d from the layer's clock
// (Config.Now), so that start times given on it hold.
func (s *Sock) sleep(d time.Duration, stop <-chan struct{}) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.closed:
	case <-stop:
	}
	return false
}

// birthdayHard is the hard side: many sockets, each probing target.
func (s *Sock) birthdayHard(pr *peer, b *birthday, target netip.AddrPort, start time.Time) {
	defer s.wg.Done()
	var socks []*extra
	defer func() {
		pr.mu.Lock()
		kept := pr.kept
		pr.bday = nil
		for _, e := range socks {
			if e != kept {
				e.retired.Store(true)
			}
		}
		pr.mu.Unlock()
		for _, e := range socks {
			if e != kept {
				s.dropExtra(e)
			}
		}
	}()
	for range nat.BirthdaySockets {
		if s.BirthdaySocketsOpen() >= s.cfg.Limits.MaxBirthdaySockets {
			s.log.Debug("birthday punching: global socket cap reached", "opened", len(socks))
			break
		}
		c, err := s.cfg.ListenExtra()
		if err != nil {
			s.log.Warn("birthday punching: opening a socket failed", "opened", len(socks), "err", err)
			break
		}
		e := &extra{conn: c}
		if !s.addExtra(e) {
			c.Close()
			if s.isClosed() {
				return
			}
			break // the global cap, reached meanwhile
		}
		socks = append(socks, e)
		s.stats.BirthdaySockets.Add(1)
		s.wg.Add(1)
		go s.readExtra(e)
	}
	if len(socks) == 0 {
		return
	}
	s.log.Debug("birthday punching (hard side)", "peer", pr.id.Short(), "target", target.String(), "sockets", len(socks))
	if !s.sleep(start.Sub(s.now()), b.done) {
		return
	}
	end := s.now().Add(nat.BirthdayWindow)
	for s.now().Before(end) {
		round := s.now()
		for i, e := range socks {
			if pr.route.Load().kind == PathDirect {
				return
			}
			s.probe(pr, true, target, nil, e, false)
			if i%hardBurst == hardBurst-1 && !s.sleep(hardBurstGap, b.done) {
				return
			}
		}
		if !s.sleep(nat.BirthdayResend-s.now().Sub(round), b.done) {
			return
		}
	}
	s.log.Debug("birthday punching (hard side) gave up", "peer", pr.id.Short())
}

// birthdayEasy is the easy side: probes to random ports of ip from the
// main socket, from sprayAt until a direct path opens.
func (s *Sock) birthdayEasy(pr *peer, ip netip.Addr, sprayAt time.Time) {
	defer s.wg.Done()
	defer s.sprays.Add(-1)
	if !s.sleep(sprayAt.Sub(s.now()), nil) {
		return
	}
	if pr.route.Load().kind == PathDirect {
		s.log.Debug("birthday punching (easy side): the direct path is up already", "peer", pr.id.Short())
		return
	}
	span := nat.BirthdayMaxPort - nat.BirthdayMinPort + 1
	ports := rand.Perm(span)[:min(nat.BirthdayProbes, span)]
	s.log.Debug("birthday punching (easy side)", "peer", pr.id.Short(), "target", ip.String(), "probes", len(ports))
	t0 := s.now()
	gap := time.Second / nat.BirthdayRate
	for i, off := range ports {
		if pr.route.Load().kind == PathDirect {
			return
		}
		s.probe(pr, true, netip.AddrPortFrom(ip, uint16(nat.BirthdayMinPort+off)), nil, nil, false)
		s.stats.BirthdayProbes.Add(1)
		if i%sprayBurst == sprayBurst-1 && !s.sleep(t0.Add(time.Duration(i+1)*gap).Sub(s.now()), nil) {
			return
		}
	}
}

// BirthdaySocketsOpen is how many extra sockets of birthday punching are
// open: during a punch up to nat.BirthdaySockets, after it one per peer
// whose direct path uses one.
func (s *Sock) BirthdaySocketsOpen() int {
	s.extraMu.Lock()
	defer s.extraMu.Unlock()
	return len(s.extras)
}
