package streamrelay

import (
	"net/netip"
	"sync"

	"github.com/keymesh/keymesh/internal/wire"
)

// Reasons a datagram from a tunnel is dropped, the reason label of
// keymesh_stream_dropped_total.
const (
	dropDestDenied = "destination_denied"   // addrpolicy refuses the range
	dropDestOwn    = "destination_own"      // one of the server's own addresses, not a public service port
	dropDestsFull  = "destinations_full"    // MaxDestinations fresh destinations already
	dropProbeRate  = "probe_rate"           // ProbeRate to a destination that never answered
	dropStrangers  = "unsolicited_rate"     // UnsolicitedRate from sources the tunnel has not sent to
	dropRate       = "rate_limited"         // the tunnel's datagrams per second
	dropByteRate   = "byte_rate_limited"    // the tunnel's bytes per second
	dropIPByteRate = "ip_byte_rate_limited" // the client address's bytes per second
	dropServerRate = "server_rate_limited"  // ServerRate toward a keymesh server
	dropMalformed  = "malformed"
	dropSend       = "send"
	dropTooLarge   = "too_large"
)

// checkDest is the stateless destination policy: "" when a tunnel may send
// to dst, else the drop reason. addrpolicy refuses loopback, private,
// CGNAT, link-local (169.254.169.254), multicast, reserved and the server's
// own addresses unless AllowDestinations has the range; at each of its own
// addresses (AdvertiseIP, a specific PresenceIP and the interface
// addresses, an anycast address among them) but loopback and link-local,
// the server's public keymesh ports (OwnPorts and the live presences) stay
// reachable, so that a tunnelled peer binds at this relay and talks to a
// peer tunnelled through it. Every other port of an own address is refused.
func (s *Server) checkDest(dst netip.AddrPort) string {
	a := dst.Addr().Unmap().WithZone("")
	if s.policy.Allowed(a) {
		return ""
	}
	if s.publicAddr(a) && s.publicPort(dst.Port()) {
		return ""
	}
	if s.own[a] {
		return dropDestOwn
	}
	return dropDestDenied
}

// toServer reports whether a datagram to dst with payload p counts
// against the tunnel's ServerRate: it goes to a keymesh server and is not
// a ticket relay's RelaySend (relayed data).
func (s *Server) toServer(dst netip.AddrPort, p []byte) bool {
	if len(p) > 0 && p[0] == wire.TypeRelaySend {
		return false
	}
	a := dst.Addr().Unmap().WithZone("")
	if s.servers[netip.AddrPortFrom(a, dst.Port())] {
		return true
	}
	return s.serverPorts[dst.Port()] && s.publicAddr(a)
}

// publicAddr reports whether a is one of this server's own addresses its
// public keymesh ports are reached at: AdvertiseIP, a specific PresenceIP,
// or an interface address (an anycast address every instance holds), but
// never loopback or link-local.
func (s *Server) publicAddr(a netip.Addr) bool {
	if a == s.cfg.AdvertiseIP {
		return true
	}
	if !s.own[a] || a.IsUnspecified() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() {
		return false
	}
	return true
}

// publicPort reports whether port is one of this server's public keymesh
// UDP ports: OwnPorts or a live presence.
func (s *Server) publicPort(port uint16) bool {
	if s.ownPorts[port] {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ports[port] > 0
}

// destinations is one tunnel's record of where it sends and who answers:
// it bounds the distinct destinations and holds an address that never
// answered to ProbeRate, whatever the ports, so that a tunnel is no flood
// cannon toward a third party. Every map is bounded.
type destinations struct {
	mu        sync.Mutex
	sent      map[netip.AddrPort]*dest
	nextEvict int64                // no entry of sent expires before this (Unix ns)
	heard     map[netip.Addr]int64 // addresses that answered at the presence: when last (an answer older than DestinationTTL no longer counts)
	// probes are the ProbeRate buckets, one per destination address (not
	// per port: a victim's ports are one victim). An address has one while
	// sent holds one of its destinations, so there are no more than sent.
	probes map[netip.Addr]*probeBucket
}

type dest struct {
	last int64 // Unix ns of the last datagram to it
}

type probeBucket struct {
	tokens float64
	refill int64
}

func newDestinations() *destinations {
	return &destinations{sent: make(map[netip.AddrPort]*dest), heard: make(map[netip.Addr]int64),
		probes: make(map[netip.Addr]*probeBucket)}
}

// allow records a datagram to dst at now (Unix ns) and returns "" when it
// may go, else the drop reason.
func (d *destinations) allow(dst netip.AddrPort, now int64, c *Config) string {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.sent[dst]
	if e == nil {
		if len(d.sent) >= c.MaxDestinations && !d.evictLocked(now, int64(c.DestinationTTL)) {
			return dropDestsFull
		}
		e = &dest{}
		d.sent[dst] = e
	}
	e.last = now
	if t, ok := d.heard[dst.Addr()]; ok {
		if now-t < int64(c.DestinationTTL) {
			return ""
		}
		delete(d.heard, dst.Addr()) // silent for the TTL: probed again until it answers
	}
	p := d.probes[dst.Addr()]
	if p == nil {
		p = &probeBucket{tokens: c.ProbeBurst, refill: now}
		d.probes[dst.Addr()] = p
	}
	if el := now - p.refill; el > 0 {
		p.tokens = min(c.ProbeBurst, p.tokens+float64(el)*c.ProbeRate/1e9)
		p.refill = now
	}
	if p.tokens < 1 {
		return dropProbeRate
	}
	p.tokens--
	return ""
}

// evictLocked drops every destination unused for ttl and reports whether
// one went. It scans only when one can have expired, so a tunnel spraying
// new destinations into a full table costs a map lookup each.
func (d *destinations) evictLocked(now, ttl int64) bool {
	if now < d.nextEvict {
		return false
	}
	freed := false
	oldest := now
	for a, e := range d.sent {
		if now-e.last >= ttl {
			delete(d.sent, a)
			freed = true
		} else {
			oldest = min(oldest, e.last)
		}
	}
	if !freed {
		d.nextEvict = oldest + ttl
		return false
	}
	live := make(map[netip.Addr]bool, len(d.sent))
	for a := range d.sent {
		live[a.Addr()] = true
	}
	for a := range d.probes {
		if !live[a] {
			delete(d.probes, a)
		}
	}
	return true
}

// solicited reports whether the tunnel sent to from (address and port,
// unmapped) within ttl before now (Unix ns): a datagram from there is an
// answer the client asked for, or a forgery from that very source; from
// anywhere else it is unsolicited, a stranger's as likely as a peer's.
func (d *destinations) solicited(from netip.AddrPort, now, ttl int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.sent[from]
	return e != nil && now-e.last < ttl
}

// heardFrom records that an answer from a arrived at the presence (from a
// destination the tunnel sent to within DestinationTTL; see solicited):
// the tunnel's sends to a are answers, not probes. When full, an arbitrary
// entry makes room (a flood of spoofed sources only sends answered
// destinations back to the probe rate until they answer again).
func (d *destinations) heardFrom(a netip.Addr, now int64, max int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.heard[a]; !ok && len(d.heard) >= max {
		for k := range d.heard {
			delete(d.heard, k)
			break
		}
	}
	d.heard[a] = now
}
