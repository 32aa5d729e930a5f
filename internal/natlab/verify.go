package natlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Timings of Verify's probes.
const (
	probeInterval = 150 * time.Millisecond // between retransmissions of a probe
	probeTimeout  = 3 * time.Second        // a probe that should be answered
	silenceWait   = 400 * time.Millisecond // how long "nothing arrives" is watched
	earlyWait     = 100 * time.Millisecond // after the early unsolicited probe
	verifyTimeout = 15 * time.Second       // one Verify call at most
)

// Verify proves that a site's NAT behaves as its type says, before the lab
// is trusted with measurements. For each host it opens one UDP socket and
// sends to two echo servers on a verifier host of the lab (different
// address and port), which report the source address:port they saw:
//
//   - the mapped address must be the site's PublicAddr;
//   - public: the mapping is the host's own address and port;
//   - full-cone, port-restricted, double, same-nat: endpoint-independent
//     mapping (same address:port to both servers) that keeps the source
//     port;
//   - symmetric: a different port per destination.
//
// Just before the host's first packet, the first server sends an
// unsolicited packet to the port the host is about to use, as an early
// hole-punching probe would: port preservation must survive it (it does
// only because each NAT drops NEW packets on its WAN).
//
// Then a third and a fourth socket (same address as the first server but
// another port; the other address) send unsolicited packets to the first
// mapping: they must arrive for public and full-cone and must not for the
// others. For udp-blocked no UDP reply may come back at all. For every type
// a TCP connection must reach the verifier from PublicAddr. For same-nat
// the two hosts must reach each other over the LAN but not through the
// NAT's public address (Linux does not hairpin).
//
// Every failure wraps ErrVerify and names the site, its type and what
// failed. Verify takes under a second per host (about 2.5 s for a same-nat
// site); calls for different sites may run concurrently.
func (l *Lab) Verify(ctx context.Context, s *Site) error {
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	v, err := l.verifierHost(ctx)
	if err != nil {
		return fmt.Errorf("natlab: verify %s site %s: %w", s.Type, s.Name, err)
	}
	p, err := openProbes(ctx, v)
	if err != nil {
		return fmt.Errorf("natlab: verify %s site %s: %w", s.Type, s.Name, err)
	}
	defer p.close()
	var errs []error
	for _, h := range s.Hosts {
		if err := p.checkUDP(ctx, s, h); err != nil {
			errs = append(errs, err)
		}
		if err := p.checkTCP(ctx, s, h); err != nil {
			errs = append(errs, err)
		}
	}
	if s.Type == SameNAT && len(errs) == 0 {
		if err := p.checkSameNAT(ctx, s); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	l.log.Info("natlab: verified", "site", s.Name, "type", s.Type)
	return nil
}

// verifierHost returns the lab's own server for Verify, making it once.
func (l *Lab) verifierHost(ctx context.Context) (*Host, error) {
	l.verifierMu.Lock()
	defer l.verifierMu.Unlock()
	if l.verifier != nil {
		return l.verifier, nil
	}
	h, err := l.addPublicHost(ctx, "natlab-verifier", "v", true, nil)
	if err != nil {
		return nil, fmt.Errorf("verifier host: %w", err)
	}
	l.verifier = h
	return h, nil
}

// probes is one Verify call's set of sockets on the verifier host: four
// UDP echo servers (s[0], s[2] on the first address, s[1], s[3] on the
// second) and a TCP server that writes back the peer's address.
type probes struct {
	nonce string
	s     [4]*net.UDPConn
	addr  [4]netip.AddrPort
	tcp   *net.TCPListener
}

func openProbes(ctx context.Context, v *Host) (*probes, error) {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	p := &probes{nonce: hex.EncodeToString(b)}
	for i := range p.s {
		c, err := v.ListenUDP(ctx, netip.AddrPortFrom(v.Addrs[i%2], 0))
		if err != nil {
			p.close()
			return nil, err
		}
		p.s[i] = c
		p.addr[i] = c.LocalAddr().(*net.UDPAddr).AddrPort()
		go echo(c)
	}
	ln, err := v.ListenTCP(ctx, netip.AddrPortFrom(v.Addrs[0], 0))
	if err != nil {
		p.close()
		return nil, err
	}
	p.tcp = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(c, c.RemoteAddr().String()+"\n")
			_ = c.Close()
		}
	}()
	return p, nil
}

func (p *probes) close() {
	for _, c := range p.s {
		if c != nil {
			_ = c.Close()
		}
	}
	if p.tcp != nil {
		_ = p.tcp.Close()
	}
}

// echo answers "probe <nonce>" with "seen <nonce> <source addr:port>".
func echo(c *net.UDPConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		msg := buf[:n]
		if nonce, ok := bytes.CutPrefix(msg, []byte("probe ")); ok {
			reply := fmt.Sprintf("seen %s %s", nonce, from)
			_, _ = c.WriteToUDPAddrPort([]byte(reply), from)
		}
	}
}

// fail returns a verify error for host h of site s.
func fail(s *Site, h *Host, format string, args ...any) error {
	return fmt.Errorf("%w: %s site %s, host %s (%s): %s", ErrVerify, s.Type, s.Name, h.Name, h.CurrentAddr(), fmt.Sprintf(format, args...))
}

// exchange sends probes from c to server until the echo comes back, and
// returns the source address the server saw. It gives up after timeout.
func (p *probes) exchange(ctx context.Context, c *net.UDPConn, server netip.AddrPort, timeout time.Duration) (netip.AddrPort, error) {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	want := "seen " + p.nonce + " "
	buf := make([]byte, 1500)
	for time.Now().Before(deadline) {
		if _, err := c.WriteToUDPAddrPort([]byte("probe "+p.nonce), server); err != nil {
			return netip.AddrPort{}, fmt.Errorf("send to %s: %w", server, err)
		}
		next := time.Now().Add(probeInterval)
		_ = c.SetReadDeadline(next)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				break // deadline: send again
			}
			if from != server || !strings.HasPrefix(string(buf[:n]), want) {
				continue
			}
			mapped, err := netip.ParseAddrPort(strings.TrimPrefix(string(buf[:n]), want))
			if err != nil {
				return netip.AddrPort{}, fmt.Errorf("bad echo %q from %s", buf[:n], server)
			}
			return mapped, nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("no echo from %s within %v", server, timeout)
}

// arrives sends msg from each of the senders to dst a few times and
// reports whether any copy reached c within silenceWait.
func arrives(c *net.UDPConn, dst netip.AddrPort, msg string, senders ...*net.UDPConn) bool {
	for i := 0; i < 3; i++ {
		for _, s := range senders {
			_, _ = s.WriteToUDPAddrPort([]byte(msg), dst)
		}
	}
	buf := make([]byte, 1500)
	_ = c.SetReadDeadline(time.Now().Add(silenceWait))
	for {
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return false
		}
		if string(buf[:n]) == msg {
			return true
		}
	}
}

// checkUDP checks the mapping and filtering of host h.
func (p *probes) checkUDP(ctx context.Context, s *Site, h *Host) error {
	c, err := h.ListenUDP(ctx, netip.AddrPortFrom(h.CurrentAddr(), 0))
	if err != nil {
		return fail(s, h, "open UDP socket: %v", err)
	}
	defer c.Close()
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()

	if s.Type == UDPBlocked {
		if m, err := p.exchange(ctx, c, p.addr[0], 4*probeInterval); err == nil {
			return fail(s, h, "UDP got through: server %s saw %s and its echo came back", p.addr[0], m)
		}
		return nil
	}

	// An unsolicited probe to the port before the host uses it, as a
	// hole-punching peer's early probe would be: a NAT that keeps a
	// conntrack entry for it (no WAN firewall) loses port preservation
	// towards that sender.
	// The pause lets the probe reach the NAT before the host's first
	// packet (order matters only for catching a NAT without the firewall).
	for i := 0; i < 2; i++ {
		_, _ = p.s[0].WriteToUDPAddrPort([]byte("early "+p.nonce), netip.AddrPortFrom(s.PublicAddr, local.Port()))
	}
	time.Sleep(earlyWait)

	m1, err := p.exchange(ctx, c, p.addr[0], probeTimeout)
	if err != nil {
		return fail(s, h, "UDP to server 1: %v", err)
	}
	m2, err := p.exchange(ctx, c, p.addr[1], probeTimeout)
	if err != nil {
		return fail(s, h, "UDP to server 2: %v", err)
	}
	if m1.Addr() != s.PublicAddr || m2.Addr() != s.PublicAddr {
		return fail(s, h, "servers saw %s and %s, want the site's public address %s", m1, m2, s.PublicAddr)
	}
	switch s.Type {
	case Public:
		if m1 != local || m2 != local {
			return fail(s, h, "servers saw %s and %s, want the host's own %s (no NAT)", m1, m2, local)
		}
	case Symmetric:
		if m1 == m2 {
			// A random port can repeat by chance; a third destination
			// settles it.
			m3, err := p.exchange(ctx, c, p.addr[2], probeTimeout)
			if err != nil {
				return fail(s, h, "UDP to server 3: %v", err)
			}
			if m3 == m1 {
				return fail(s, h, "mapping is endpoint-independent (%s for three destinations), want a new port per destination", m1)
			}
		}
	default:
		if m1 != m2 {
			return fail(s, h, "mapping depends on the destination (%s to %s, %s to %s), want endpoint-independent", m1, p.addr[0], m2, p.addr[1])
		}
		if m1.Port() != local.Port() {
			return fail(s, h, "source port not preserved: local port %d mapped to %d (after an unsolicited packet from %s to that port; is the NAT's WAN INPUT firewall missing?)", local.Port(), m1.Port(), p.addr[0])
		}
	}

	// Filtering: unsolicited packets to the first mapping from an
	// endpoint the host never sent to: same address as server 1 with
	// another port, and the other address.
	sameAddr := arrives(c, m1, "unsolicited-port "+p.nonce, p.s[2])
	otherAddr := arrives(c, m1, "unsolicited-addr "+p.nonce, p.s[3])
	open := s.Type == Public || s.Type == FullCone
	switch {
	case open && !sameAddr:
		return fail(s, h, "unsolicited UDP from %s to mapping %s was dropped, want it delivered (endpoint-independent filtering)", p.addr[2], m1)
	case open && !otherAddr:
		return fail(s, h, "unsolicited UDP from %s to mapping %s was dropped, want it delivered (endpoint-independent filtering)", p.addr[3], m1)
	case !open && sameAddr:
		return fail(s, h, "unsolicited UDP from %s (another port of a server it sent to) reached the host through %s, want it filtered", p.addr[2], m1)
	case !open && otherAddr:
		return fail(s, h, "unsolicited UDP from %s reached the host through %s, want it filtered", p.addr[3], m1)
	}
	return nil
}

// checkTCP checks that host h connects out over TCP from the public
// address.
func (p *probes) checkTCP(ctx context.Context, s *Site, h *Host) error {
	dst := p.tcp.Addr().(*net.TCPAddr).AddrPort()
	dctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	c, err := h.DialTCP(dctx, dst)
	if err != nil {
		return fail(s, h, "TCP to %s: %v", dst, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(probeTimeout))
	line, err := io.ReadAll(c)
	if err != nil {
		return fail(s, h, "TCP to %s: read: %v", dst, err)
	}
	seen, err := netip.ParseAddrPort(strings.TrimSpace(string(line)))
	if err != nil {
		return fail(s, h, "TCP to %s: bad answer %q", dst, line)
	}
	if seen.Addr() != s.PublicAddr {
		return fail(s, h, "TCP server saw %s, want the site's public address %s", seen, s.PublicAddr)
	}
	return nil
}

// checkSameNAT checks that the two hosts of a same-nat site reach each
// other over the LAN and not through the NAT's public address.
func (p *probes) checkSameNAT(ctx context.Context, s *Site) error {
	h1, h2 := s.Hosts[0], s.Hosts[1]
	c1, err := h1.ListenUDP(ctx, netip.AddrPortFrom(h1.CurrentAddr(), 0))
	if err != nil {
		return fail(s, h1, "open UDP socket: %v", err)
	}
	defer c1.Close()
	c2, err := h2.ListenUDP(ctx, netip.AddrPortFrom(h2.CurrentAddr(), 0))
	if err != nil {
		return fail(s, h2, "open UDP socket: %v", err)
	}
	defer c2.Close()
	lan2 := c2.LocalAddr().(*net.UDPAddr).AddrPort()
	if !arrives(c2, lan2, "lan "+p.nonce, c1) {
		return fail(s, h1, "UDP over the LAN to %s (%s) did not arrive", h2.Name, lan2)
	}
	m2, err := p.exchange(ctx, c2, p.addr[0], probeTimeout)
	if err != nil {
		return fail(s, h2, "UDP to server 1: %v", err)
	}
	if arrives(c2, m2, "hairpin "+p.nonce, c1) {
		return fail(s, h1, "UDP to %s's public mapping %s arrived: the NAT hairpins, want it not to (Linux default)", h2.Name, m2)
	}
	return nil
}
