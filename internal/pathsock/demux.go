package pathsock

import (
	"slices"
	"time"

	"github.com/keymesh/keymesh/internal/wire"
	"net/netip"
)

// stash holds data frames from tags not known yet: a peer's first QUIC
// packets through the relay can beat the rendezvous' Punch that introduces
// it. They are delivered when the peer is added, or dropped after stashTTL;
// a full stash drops its oldest entry for a new one.
const (
	maxStash = 64
	stashTTL = 3 * time.Second
)

// minNoticeFrame is the smallest data frame whose unknown source address
// is probed (a sealed Probe is about 110 bytes).
const minNoticeFrame = 128

type stashed struct {
	tag uint64
	pk  inPacket
	at  time.Time
}

// handle demultiplexes one datagram; it owns bp.
func (s *Sock) handle(bp *[]byte, n int, from netip.AddrPort) {
	s.handleVia(bp, n, from, nil)
}

// handleVia demultiplexes one datagram that arrived on socket via (nil:
// the main socket). A birthday socket takes only peers' direct frames.
func (s *Sock) handleVia(bp *[]byte, n int, from netip.AddrPort, via *extra) {
	b := (*bp)[:n]
	switch wire.Classify(b) {
	case wire.KindSTUN:
		if s.cfg.OnSTUN != nil {
			s.cfg.OnSTUN(b, from)
		}
		s.putBuf(bp)
		return
	case wire.KindKeymesh:
	default:
		s.putBuf(bp)
		return
	}
	t, err := wire.Header(b)
	if err != nil {
		s.putBuf(bp)
		return
	}
	if via != nil && t != wire.TypeData && t != wire.TypeSealed {
		s.putBuf(bp)
		return
	}
	switch t {
	case wire.TypeData:
		if s.dropDirect(from) {
			break
		}
		tag, payload, err := wire.ParseData(b)
		if err != nil {
			break
		}
		s.data(bp, tag, n-len(payload), len(payload), from, true)
		return
	case wire.TypeRelayed:
		tag, payload, err := wire.ParseData(b)
		if err != nil || len(payload) == 0 {
			break
		}
		if payload[0] >= 0x20 && payload[0] <= 0x2f {
			// A control frame that came through the relay.
			s.sealed(payload, from, false, tag, nil)
			break
		}
		s.data(bp, tag, n-len(payload), len(payload), from, false)
		return
	case wire.TypeSealed:
		sl, err := wire.ParseSealed(b)
		if err != nil {
			break
		}
		if sl.Sender == s.cfg.ServerKey && !sl.Sender.IsZero() {
			if s.cfg.OnServerFrame != nil && via == nil {
				s.cfg.OnServerFrame(b, from)
			}
			break
		}
		if s.dropDirect(from) {
			break
		}
		s.sealed(b, from, true, 0, via)
	case wire.TypeCookieReply:
		// The rendezvous' unsealed cookie (the client checks that it came
		// from the server's address and answers a request of ours).
		if s.cfg.OnServerFrame != nil && via == nil {
			s.cfg.OnServerFrame(b, from)
		}
	case wire.TypeRelayBound:
		s.relayBound(b, from)
	case wire.TypeRelayChallenge:
		s.relayChallenge(b, from)
	}
	s.putBuf(bp)
}

// data passes a QUIC packet to ReadFrom; it owns bp.
func (s *Sock) data(bp *[]byte, tag uint64, off, n int, from netip.AddrPort, direct bool) {
	s.mu.RLock()
	pr := s.byTag[tag]
	s.mu.RUnlock()
	pk := inPacket{bp: bp, off: off, n: n}
	if pr == nil {
		s.stashPacket(tag, pk)
		return
	}
	now := s.now()
	// Not heard(): a data frame is not authenticated here (QUIC does
	// that), so it buys no resend; the sealed probes that follow a
	// silence do.
	pr.lastSeen.Store(now.UnixNano())
	if direct {
		if r := pr.route.Load(); r.kind == PathDirect && r.addr == from {
			pr.lastDirect.Store(now.UnixNano())
		}
	} else if r := pr.route.Load(); r.kind == PathDirect {
		s.followToRelay(pr, r, now)
	}
	// A new source is probed only for a frame at least as large as the
	// probe: a spoofed tag must not buy an amplified reflection.
	if direct && n >= minNoticeFrame {
		s.noticeSource(pr, from, now, false)
	}
	pk.from = pr.vaddr
	s.queue(pk)
}

func (s *Sock) queue(pk inPacket) {
	select {
	case s.in <- pk:
		s.stats.Received.Add(1)
	default:
		s.stats.QueueFull.Add(1)
		s.putBuf(pk.bp)
	}
}

// noticeSource probes a peer's source address that is not its active
// direct path (it moved, or its NAT rebound): the data frame's tag is not
// proof, the probe's reply is. An address is probed at most once a second
// this way, but at once for the peer's first frame ever (first: it has
// just learned of us, and dropped our punching probes until then).
func (s *Sock) noticeSource(pr *peer, from netip.AddrPort, now time.Time, first bool) {
	if s.noDirect() {
		return
	}
	if r := pr.route.Load(); r.kind == PathDirect && r.addr == from {
		return
	}
	pr.mu.Lock()
	c := pr.cands[from]
	if c == nil {
		c = s.addCandLocked(pr, from, true, false, now)
	}
	due := c != nil && (first || now.Sub(c.lastSent) >= time.Second)
	pr.mu.Unlock()
	if due {
		s.sendProbe(pr, true, from, nil)
	}
}

// stashPacket keeps an early data frame. A full stash drops its oldest
// entry rather than the new one: anyone may send frames under made-up tags,
// and refusing would let a few dozen a second keep every newly introduced
// peer's first packets out. A peer's packet is lost only if maxStash more
// frames arrive before its introduction.
func (s *Sock) stashPacket(tag uint64, pk inPacket) {
	s.mu.Lock()
	var old *[]byte
	if len(s.stash) >= maxStash {
		old = s.stash[0].pk.bp
		n := copy(s.stash, s.stash[1:])
		s.stash[n] = stashed{}
		s.stash = s.stash[:n]
	}
	s.stash = append(s.stash, stashed{tag: tag, pk: pk, at: s.now()})
	s.mu.Unlock()
	if old != nil {
		s.putBuf(old)
	}
	s.stats.Stashed.Add(1)
}

// flushStash delivers the packets stashed for a newly added peer.
func (s *Sock) flushStash(pr *peer) {
	s.mu.Lock()
	var mine []stashed
	s.stash = slices.DeleteFunc(s.stash, func(st stashed) bool {
		if st.tag == pr.tag {
			mine = append(mine, st)
			return true
		}
		return false
	})
	s.mu.Unlock()
	for _, st := range mine {
		st.pk.from = pr.vaddr
		s.queue(st.pk)
	}
}

func (s *Sock) expireStash(now time.Time) {
	s.mu.Lock()
	var old []stashed
	s.stash = slices.DeleteFunc(s.stash, func(st stashed) bool {
		if now.Sub(st.at) > stashTTL {
			old = append(old, st)
			return true
		}
		return false
	})
	s.mu.Unlock()
	for _, st := range old {
		s.putBuf(st.pk.bp)
	}
}
