package relay

import (
	"bytes"
	"errors"
	"net/netip"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/mesh"
	"github.com/keymesh/keymesh/internal/wire"
)

// action is what to do with a datagram.
type action uint8

const (
	actDrop      action = iota
	actForward          // send out (a suffix of the datagram) to the ticket's address
	actReply            // send out (a RelayBound) back to the source
	actChallenge        // send out (a RelayChallenge) back to the source
)

// toSource reports whether the action answers the datagram's source.
func (a action) toSource() bool { return a == actReply || a == actChallenge }

// worker is one Serve loop's private state: its counts and the scratch
// memory that keeps the hot path free of allocations.
type worker struct {
	s       *Server
	st      stats
	scratch crypto.TicketScratch
	ticket  []byte
	meshBuf []byte // a mesh message being sent (viaHome)
	// cookies makes and checks bind cookies on the clock of the datagram
	// being handled (now).
	cookies *crypto.CookieJar
	now     time.Time
	// last is the ticket this worker opened last, in the batch handled at
	// the clock reading at (Unix ns); forget clears it before each batch.
	// A segmented sender's datagrams to one peer carry the same ticket
	// bytes, which open the same way under the same keys, so only the
	// first of them pays for the AEAD open. A hit skips the expiry check
	// and a key removed meanwhile for at most the rest of one batch
	// (microseconds; expiries have whole seconds). Every datagram still
	// gets its own size, version and rate checks (the rate prepaid per
	// run, see run).
	last struct {
		ok     bool
		at     int64
		ticket [crypto.TicketSize]byte
		t      crypto.Ticket
	}
	// run is the per-pair rate paid ahead for a coalesced run (one receive
	// slot: one source, datagrams of one size) whose every datagram is a
	// RelaySend with the same ticket bytes (uniformRun). The first of them
	// whose ticket opens charges the pair for the whole run at once, when
	// the bucket holds that much (else each datagram pays its own), and the
	// rest of the run goes without another limiter look-up. Only a
	// datagram of such a run dropped after the charge (a wrong version
	// byte) leaves its token spent: a run may overpay, never underpay.
	run struct {
		src  netip.AddrPort
		dst  netip.Addr
		left int // prepaid datagrams
		size int // the run's datagrams, before its charge; 0: pay one by one
	}
}

// forget drops the remembered ticket: called before each batch, whose
// datagrams share one clock reading.
func (w *worker) forget() { w.last.ok = false }

// startRun clears the prepaid rate before a receive slot holding a run of
// n datagrams that uniformRun found alike (0: pay one by one).
func (w *worker) startRun(n int) { w.run.left, w.run.size = 0, n }

// uniformRun returns how many datagrams of seg bytes (the last may be
// shorter) buf holds when every one is long enough for a RelaySend and
// carries the first one's ticket bytes, else 0.
func uniformRun(buf []byte, seg int) int {
	if seg <= 0 || len(buf) <= seg {
		return 0
	}
	end := wire.HeaderLen + crypto.TicketSize
	n := 0
	for off := 0; off < len(buf); off += seg {
		pkt := buf[off:min(off+seg, len(buf))]
		if len(pkt) < wire.RelaySendOverhead || (n > 0 && !bytes.Equal(pkt[wire.HeaderLen:end], buf[wire.HeaderLen:end])) {
			return 0
		}
		n++
	}
	return n
}

// charge takes the per-pair rate for one datagram from src to dst (whose
// ticket opened), paying for its whole run at the run's first charge when
// the bucket allows.
func (w *worker) charge(src netip.AddrPort, dst netip.Addr, nowNs int64) bool {
	r := &w.run
	if r.left > 0 && r.src == src && r.dst == dst {
		r.left--
		return true
	}
	n := r.size
	r.left, r.size = 0, 0
	if n > 1 && w.s.lim.send.AllowPairN(src.Addr(), dst, nowNs, float64(n)) {
		r.src, r.dst, r.left = src, dst, n-1
		return true
	}
	return w.s.lim.send.AllowPair(src.Addr(), dst, nowNs)
}

func (s *Server) newWorker() *worker {
	w := &worker{s: s, ticket: make([]byte, 0, crypto.TicketSize)}
	if s.cfg.Mesh != nil {
		w.meshBuf = make([]byte, 0, mesh.MaxMessage)
	}
	w.cookies = crypto.NewCookieJar(s.cookieSecret, func() time.Time { return w.now })
	return w
}

// handle decides what to do with the datagram pkt that came from src at
// now (Unix ns and time). For actForward, out is a suffix of pkt, rewritten
// in place into a Relayed frame, and dst is the address inside its ticket.
// For actReply and actChallenge, out is a RelayBound or RelayChallenge
// written into reply (capacity at least wire.RelayBoundLen) and goes back
// to src. Either way out is never larger than pkt. A dropped datagram is
// counted by reason in w.st; what is sent is counted by the caller once the
// kernel took it.
func (w *worker) handle(pkt []byte, src netip.AddrPort, now time.Time, nowNs int64, reply []byte) (act action, out []byte, dst netip.AddrPort) {
	w.st.received++
	if len(pkt) < wire.HeaderLen || len(pkt) > wire.MaxFrame || !src.IsValid() {
		w.st.drop(reasonMalformed)
		return actDrop, nil, dst
	}
	switch pkt[0] {
	case wire.TypeRelaySend:
		if pkt[1] != wire.Version {
			w.st.drop(reasonBadVersion)
			return actDrop, nil, dst
		}
		return w.send(pkt, src, nowNs)
	case wire.TypeRelayBind:
		if pkt[1] != wire.BindVersion {
			w.st.drop(reasonBadVersion)
			return actDrop, nil, dst
		}
		return w.bind(pkt, src, now, nowNs, reply)
	}
	w.st.drop(reasonMalformed)
	return actDrop, nil, dst
}

// send opens a RelaySend's ticket and rewrites the frame for forwarding.
//
// The ticket is opened before the source's rate is charged, and the rate is
// that of the source towards the ticket's address: the source address is
// the one thing in the frame anyone can forge, so a limit charged first, or
// per source alone, lets a flood spoofed from a victim's address spend the
// victim's budget. This way a frame whose ticket does not open spends
// nobody's budget, and one that does spends only its source's budget
// towards that ticket's peer, which takes a ticket for that peer to do.
// Opening first does not make the open cheaper to abuse: the limit was
// keyed by a source the sender picks, so it never bounded how many opens a
// spoofing flood costs; and an open (one XChaCha20-Poly1305 over 58 bytes,
// BenchmarkHandleForgedSend) costs what a forwarded frame costs anyway
// (BenchmarkHandleForward), both about 0.4 us on a 2-core test machine.
func (w *worker) send(pkt []byte, src netip.AddrPort, nowNs int64) (action, []byte, netip.AddrPort) {
	if len(pkt) < wire.RelaySendOverhead {
		w.st.drop(reasonTruncated)
		return actDrop, nil, netip.AddrPort{}
	}
	sealed := pkt[wire.HeaderLen : wire.HeaderLen+crypto.TicketSize]
	t := w.last.t
	if !w.last.ok || w.last.at != nowNs || !bytes.Equal(sealed, w.last.ticket[:]) {
		var err error
		w.st.opens++
		if t, err = w.s.cfg.Keys.OpenWith(&w.scratch, sealed); err != nil {
			w.st.drop(ticketReason(err))
			return actDrop, nil, netip.AddrPort{}
		}
		w.last.ok, w.last.at, w.last.t = true, nowNs, t
		copy(w.last.ticket[:], sealed)
	}
	if !w.charge(src, t.Addr.Addr(), nowNs) {
		w.st.drop(reasonRateLimited)
		return actDrop, nil, netip.AddrPort{}
	}
	out := wire.RelayedFromSend(pkt)
	if w.viaHome(t.Instance, out, t.Addr) {
		return actDrop, nil, netip.AddrPort{} // sent by the mesh, nothing to send here
	}
	return actForward, out, t.Addr
}

func ticketReason(err error) reason {
	switch {
	case errors.Is(err, crypto.ErrTicketTruncated):
		return reasonTruncated
	case errors.Is(err, crypto.ErrTicketUnknown):
		return reasonUnknownKey
	case errors.Is(err, crypto.ErrTicketExpired):
		return reasonExpired
	default:
		return reasonForged
	}
}

// bind checks a RelayBind in order of cost: size and clock, then the cookie
// (one MAC; without a valid one the bind gets a challenge, or nothing over
// the source's challenge rate), and only for a proven address the source's
// bind rate, the global signature budget and the signature. It answers
// with a ticket for the address the bind came from.
func (w *worker) bind(pkt []byte, src netip.AddrPort, now time.Time, nowNs int64, reply []byte) (action, []byte, netip.AddrPort) {
	s := w.s
	r, err := wire.PeekRelayBind(pkt)
	if err != nil {
		w.st.drop(reasonTruncated)
		return actDrop, nil, netip.AddrPort{}
	}
	if skew := now.Sub(r.Time); skew < -s.cfg.ClockSkew || skew > s.cfg.ClockSkew {
		w.st.drop(reasonStaleTime)
		return actDrop, nil, netip.AddrPort{}
	}
	src = unmap(src)
	w.now = now
	if r.Cookie == (crypto.Cookie{}) || !w.cookies.Check(src, r.Cookie) {
		return w.challenge(r.Echo, src, nowNs, reply)
	}
	// The address is proven: src is where the bind came from.
	if !s.lim.bind.Allow(src.Addr(), nowNs) {
		w.st.drop(reasonBindLimited)
		return actDrop, nil, netip.AddrPort{}
	}
	if !s.lim.sigs.Allow(nowNs) {
		w.st.drop(reasonBindBudget)
		return actDrop, nil, netip.AddrPort{}
	}
	if _, err := wire.ParseRelayBind(pkt); err != nil {
		w.st.drop(reasonBadSignature)
		return actDrop, nil, netip.AddrPort{}
	}
	expiry := now.Add(s.cfg.TicketTTL)
	w.ticket = s.cfg.Keys.Seal(w.ticket[:0], crypto.Ticket{Addr: src, ID: r.ID, Expiry: expiry, Instance: s.members.Self()})
	out := wire.AppendRelayBound(reply[:0], wire.RelayBound{
		Ticket: w.ticket, Observed: src, Expiry: expiry, Cookie: w.cookies.Make(src), Echo: r.Echo,
	})
	return actReply, out, src
}

// challenge answers a bind from an address not proven yet with a cookie
// for that address, within the source's challenge rate.
func (w *worker) challenge(echo wire.Echo, src netip.AddrPort, nowNs int64, reply []byte) (action, []byte, netip.AddrPort) {
	if !w.s.lim.challenge.Allow(src.Addr(), nowNs) {
		w.st.drop(reasonChallengeLimited)
		return actDrop, nil, netip.AddrPort{}
	}
	out := wire.AppendRelayChallenge(reply[:0], wire.RelayChallenge{Cookie: w.cookies.Make(src), Echo: echo})
	return actChallenge, out, src
}
