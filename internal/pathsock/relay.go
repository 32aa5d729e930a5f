package pathsock

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/nat"
	"github.com/keymesh/keymesh/internal/wire"
)

// relays is the layer's relay bindings. Every relay the rendezvous lists is
// bound (each binding keeps a NAT mapping alive and measures the RTT); the
// lowest-RTT one is chosen: its ticket is published, and all relayed
// traffic goes to it. Relay instances share their ticket keys (they sit
// behind one anycast address), so the chosen relay forwards to any peer's
// ticket.
type relays struct {
	mu    sync.Mutex                  // guards every field but chosen, and every binding
	list  []string                    // the relays to bind, as the rendezvous named them
	binds map[netip.AddrPort]*binding // by resolved address
	force bool                        // rebind every relay at the next tick
	// lostAt is when the relay path was last found lost (lostLocked);
	// zero once a relay answered after it.
	lostAt time.Time
	// lostReact is when a relay loss was last announced (at most once per
	// lostReactEvery).
	lostReact time.Time

	chosen atomic.Pointer[netip.AddrPort] // written under mu, read without it by the data path
}

// binding is one relay's state.
type binding struct {
	name     string
	sent     time.Time // last RelayBind sent
	bound    time.Time // last RelayBound received
	rtt      time.Duration
	ticket   []byte
	expiry   time.Time
	observed netip.AddrPort
	// cookie is the relay's latest address-validation cookie (from a
	// RelayChallenge or RelayBound), carried by the next bind; echo is
	// what the answer to the last bind sent must repeat.
	cookie     crypto.Cookie
	echo       wire.Echo
	challenged int // challenges answered at once since the last RelayBound
	// lostBinds counts the binds sent since the relay path was found lost
	// (relays.lostAt) and not answered yet.
	lostBinds int
}

// After the relay path is found lost (relays.lostLocked), every relay is
// bound again at once and the binds are retried every lostRetry for
// lostFast, then at nat.RelayRetryInterval. A relay that answers only
// after a retry (the one that held this peer's flow is gone; the anycast
// address now leads to another instance, which seals its own instance
// into the ticket), or another relay answering first, is a new relay path:
// the layer re-registers and sends its peers the new ticket.
const (
	lostRetry = 200 * time.Millisecond
	lostFast  = 3 * time.Second
)

// bindDueLocked decides whether a RelayBind goes to b at now: at first, on
// request (force), every nat.RelayRebindInterval, and while unanswered every
// nat.RelayRetryInterval, or every lostRetry for lostFast after the relay
// path was found lost at lostAt. The caller holds relays.mu.
func (b *binding) bindDueLocked(now time.Time, force bool, lostAt time.Time) bool {
	if force {
		return true
	}
	lost := !lostAt.IsZero() && !b.bound.After(lostAt)
	if !lost && !b.bound.IsZero() && now.Sub(b.bound) < nat.RelayRebindInterval {
		return false
	}
	retry := nat.RelayRetryInterval
	if lost && now.Sub(lostAt) < lostFast {
		// Not faster than twice the relay's RTT: a retry changes the echo
		// the answer must carry.
		retry = max(lostRetry, 2*b.rtt)
		if !b.sent.After(lostAt) {
			return true // the first bind after the loss goes at once
		}
	}
	return now.Sub(b.sent) >= retry
}

// lostLocked records that the relay path was found lost at now: every
// relay is bound again at once (bindDueLocked). It reports false while an
// earlier loss is still unanswered. The caller holds relays.mu.
func (r *relays) lostLocked(now time.Time) bool {
	if !r.lostAt.IsZero() {
		return false
	}
	r.lostAt = now
	for _, b := range r.binds {
		b.lostBinds = 0
	}
	return true
}

// boundAfterLossLocked decides, for a RelayBound from the relay at from
// (binding b) at now, after the relay path was found lost: whether from
// becomes the chosen relay (another relay answered first), and whether the
// answer is a new relay path to announce (a relay that answered only after
// a retry may be another instance; another relay is another path). It
// ends the loss. The caller holds relays.mu.
func (r *relays) boundAfterLossLocked(from netip.AddrPort, b *binding, now time.Time) (choose, announce bool) {
	if r.lostAt.IsZero() {
		return false, false
	}
	cur := r.chosenAddr()
	choose = cur != from
	announce = choose || b.lostBinds > 1
	r.lostAt = time.Time{}
	for _, o := range r.binds {
		o.lostBinds = 0
	}
	if announce {
		if !r.lostReact.IsZero() && now.Sub(r.lostReact) < lostReactEvery {
			announce = false
		} else {
			r.lostReact = now
		}
	}
	return choose, announce
}

// maxChallenges is how many RelayChallenges in a row a binding answers at
// once; past that it waits for the next retry, so that a relay (or someone
// spoofing one) that keeps challenging cannot spin it.
const maxChallenges = 3

// bindFrameLocked appends a RelayBind carrying b's cookie and remembers its
// echo. The caller holds relays.mu.
func (s *Sock) bindFrameLocked(out []byte, b *binding, now time.Time) []byte {
	start := len(out)
	out = wire.AppendRelayBind(out, s.id, now, b.cookie)
	req, _ := wire.PeekRelayBind(out[start:])
	b.echo = req.Echo
	b.sent = now
	return out
}

// RelayStatus describes the chosen relay.
type RelayStatus struct {
	Addr     netip.AddrPort
	Name     string
	RTT      time.Duration
	Observed netip.AddrPort // this peer's address as the relay sees it
	Expiry   time.Time      // of the current ticket
}

func (r *relays) chosenAddr() netip.AddrPort {
	if p := r.chosen.Load(); p != nil {
		return *p
	}
	return netip.AddrPort{}
}

func resolveUDP(hostport string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddrPort(hostport); err == nil {
		return unmap(a), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("relay address %q: %w", hostport, err)
	}
	p, err := net.DefaultResolver.LookupPort(ctx, "udp", port)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("relay address %q: %w", hostport, err)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("relay address %q: resolve: %w", hostport, err)
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(p)), nil
}

// SetRelays sets the relays to bind (host:port, from the rendezvous'
// Registered). Names are resolved in the background.
func (s *Sock) SetRelays(list []string) {
	s.relay.mu.Lock()
	if slices.Equal(list, s.relay.list) {
		s.relay.mu.Unlock()
		return
	}
	s.relay.list = slices.Clone(list)
	s.relay.mu.Unlock()
	go s.resolveRelays(slices.Clone(list))
}

func (s *Sock) resolveRelays(list []string) {
	addrs := map[netip.AddrPort]string{}
	for _, name := range list {
		a, err := s.cfg.Resolve(name)
		if err != nil {
			s.log.Warn("relay unusable", "relay", name, "err", err)
			continue
		}
		if !s.canSendTo(a) {
			continue
		}
		addrs[a] = name
	}
	s.relay.mu.Lock()
	defer s.relay.mu.Unlock()
	if !slices.Equal(list, s.relay.list) {
		return // superseded
	}
	binds := map[netip.AddrPort]*binding{}
	for a, name := range addrs {
		if old := s.relay.binds[a]; old != nil {
			binds[a] = old
			continue
		}
		binds[a] = &binding{name: name}
	}
	s.relay.binds = binds
	if c := s.relay.chosen.Load(); c != nil && binds[*c] == nil {
		s.relay.chosen.Store(nil)
	}
	s.relay.force = true
}

// tickRelays sends due RelayBinds: at first and on request at once, then
// every nat.RelayRebindInterval, retrying every nat.RelayRetryInterval while
// unanswered.
func (s *Sock) tickRelays(now time.Time) {
	var frames []byte // one RelayBind per due relay, each with its cookie
	var due []netip.AddrPort
	s.relay.mu.Lock()
	force := s.relay.force
	s.relay.force = false
	lostAt := s.relay.lostAt
	if !lostAt.IsZero() && now.Sub(lostAt) >= nat.RelayRebindInterval {
		// Unanswered for a whole rebind period: the next loss starts
		// afresh.
		s.relay.lostAt, lostAt = time.Time{}, time.Time{}
	}
	for a, b := range s.relay.binds {
		if b.bindDueLocked(now, force, lostAt) {
			frames = s.bindFrameLocked(frames, b, now)
			if !lostAt.IsZero() {
				b.lostBinds++
			}
			due = append(due, a)
		}
	}
	s.relay.mu.Unlock()
	for i, a := range due {
		s.send(frames[i*wire.RelayBindLen:(i+1)*wire.RelayBindLen], a)
	}
}

// relayChallenge takes a relay's challenge to a bind: it binds again at
// once with the cookie.
func (s *Sock) relayChallenge(b []byte, from netip.AddrPort) {
	c, err := wire.ParseRelayChallenge(b)
	if err != nil {
		return
	}
	bp := s.getBuf()
	defer s.putBuf(bp)
	s.relay.mu.Lock()
	bd := s.relay.binds[from]
	if bd == nil || bd.sent.IsZero() || c.Echo != bd.echo {
		s.relay.mu.Unlock()
		return // unsolicited, or not an answer to the last bind
	}
	bd.cookie = c.Cookie
	if bd.challenged >= maxChallenges {
		s.relay.mu.Unlock()
		return // the next retry carries the cookie
	}
	bd.challenged++
	frame := s.bindFrameLocked((*bp)[:0], bd, s.now())
	s.relay.mu.Unlock()
	s.send(frame, from)
}

// relayBound takes a relay's answer to a bind.
func (s *Sock) relayBound(b []byte, from netip.AddrPort) {
	r, err := wire.ParseRelayBound(b)
	if err != nil {
		return
	}
	observed := r.Observed
	now := s.now()
	s.relay.mu.Lock()
	bd := s.relay.binds[from]
	if bd == nil || bd.sent.IsZero() || r.Echo != bd.echo {
		s.relay.mu.Unlock()
		return // unsolicited, or not an answer to the last bind
	}
	bd.rtt = smooth(bd.rtt, max(now.Sub(bd.sent), time.Microsecond))
	bd.bound = now
	bd.ticket, bd.expiry = r.Ticket, r.Expiry
	bd.cookie, bd.challenged = r.Cookie, 0
	prevObserved := bd.observed
	bd.observed = unmap(observed)
	changed := false
	cur := s.relay.chosenAddr()
	curB := s.relay.binds[cur]
	choose, announce := s.relay.boundAfterLossLocked(from, bd, now)
	switch {
	case choose:
		changed = true
		s.relay.chosen.Store(&from)
	case announce:
		changed = true
	case curB == nil || curB.bound.IsZero() || now.Sub(curB.bound) > 2*nat.RelayRebindInterval+nat.RelayRetryInterval:
		changed = cur != from
		s.relay.chosen.Store(&from)
	case cur != from && bd.rtt*4 < curB.rtt*3:
		changed = true
		s.relay.chosen.Store(&from)
	case cur == from && prevObserved != bd.observed:
		changed = true
	}
	s.relay.mu.Unlock()
	s.checkNAT(changed)
	if changed {
		s.log.Info("relay bound", "relay", from.String(), "observed", observed.String(), "rtt", bd.rtt)
		s.localChanged("relay ticket changed")
	}
}

// Tickets returns the tickets to publish: the chosen relay's, while valid.
func (s *Sock) Tickets() [][]byte {
	s.relay.mu.Lock()
	defer s.relay.mu.Unlock()
	b := s.relay.binds[s.relay.chosenAddr()]
	if b == nil || b.ticket == nil || !s.now().Before(b.expiry) {
		return nil
	}
	return [][]byte{slices.Clone(b.ticket)}
}

// Relay describes the chosen relay; ok is false while there is none.
func (s *Sock) Relay() (RelayStatus, bool) {
	s.relay.mu.Lock()
	defer s.relay.mu.Unlock()
	a := s.relay.chosenAddr()
	b := s.relay.binds[a]
	if b == nil {
		return RelayStatus{}, false
	}
	return RelayStatus{Addr: a, Name: b.name, RTT: b.rtt, Observed: b.observed, Expiry: b.expiry}, true
}

// relayPathLost reacts to a relay path that carries data out and nothing
// back (relayLost): every relay is bound again at once and, while
// unanswered, every lostRetry; the relay that answers (another instance
// behind the same address, or another relay) is announced
// (boundAfterLossLocked).
func (s *Sock) relayPathLost(now time.Time) {
	s.relay.mu.Lock()
	first := s.relay.lostLocked(now)
	s.relay.mu.Unlock()
	if first {
		s.log.Info("relay path lost: binding again", "relay", s.relay.chosenAddr().String())
	}
}

func (s *Sock) forceRebind() {
	s.relay.mu.Lock()
	s.relay.force = true
	s.relay.mu.Unlock()
}

// CheckRelays asks every relay for a fresh binding at the next tick. The
// node asks it when the rendezvous stops answering: a relay that still
// answers (RelayAnswered) says UDP works.
func (s *Sock) CheckRelays() { s.forceRebind() }

// RelayAnswered returns when a relay last answered a bind of ours (zero:
// never). Only an answer that repeats the echo of our latest bind counts
// (relayBound), so a stranger cannot make an unreachable relay look
// answered.
func (s *Sock) RelayAnswered() time.Time {
	s.relay.mu.Lock()
	defer s.relay.mu.Unlock()
	var last time.Time
	for _, b := range s.relay.binds {
		if b.bound.After(last) {
			last = b.bound
		}
	}
	return last
}
