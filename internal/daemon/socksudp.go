package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	socks5 "github.com/things-go/go-socks5"
	"github.com/things-go/go-socks5/statute"
)

// socksAssociate serves a UDP ASSOCIATE (RFC 1928 section 7) in userspace
// mode: a UDP socket on the proxy's own IP takes the client's datagrams
// (only from the client's IP, and from the first port that sends), sends
// each through the userspace stack to the overlay address it names, and
// returns the answers. The association ends with the client's TCP
// connection, as RFC 1928 says.
func (s *Server) socksAssociate(ctx context.Context, w io.Writer, req *socks5.Request) error {
	var bindIP net.IP
	if ta, ok := req.LocalAddr.(*net.TCPAddr); ok {
		bindIP = ta.IP
	}
	var clientIP net.IP
	if ta, ok := req.RemoteAddr.(*net.TCPAddr); ok {
		clientIP = ta.IP
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: bindIP})
	if err != nil {
		socks5.SendReply(w, statute.RepServerFailure, nil)
		return fmt.Errorf("socks5 associate: %w", err)
	}
	if err := socks5.SendReply(w, statute.RepSuccess, pc.LocalAddr()); err != nil {
		pc.Close()
		return err
	}
	a := &association{s: s, pc: pc, clientIP: clientIP, conns: map[netip.AddrPort]*assocConn{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.serve()
	}()
	// The TCP connection carries nothing more: wait for its end.
	_, _ = io.Copy(io.Discard, req.Reader)
	pc.Close()
	<-done
	a.closeAll()
	return nil
}

// association is one UDP ASSOCIATE.
type association struct {
	s        *Server
	pc       *net.UDPConn
	clientIP net.IP

	mu     sync.Mutex
	client *net.UDPAddr // the client's UDP source, fixed by its first datagram
	conns  map[netip.AddrPort]*assocConn
}

type assocConn struct {
	c    net.Conn
	hdr  []byte // the SOCKS5 UDP header naming this destination
	last time.Time
}

func (a *association) serve() {
	buf := make([]byte, MaxFrame)
	for {
		n, from, err := a.pc.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if a.clientIP != nil && !from.IP.Equal(a.clientIP) {
			continue
		}
		a.mu.Lock()
		if a.client == nil {
			a.client = from
		}
		ok := a.client.Port == from.Port
		a.mu.Unlock()
		if !ok {
			continue
		}
		dst, hdr, payload, err := parseSOCKSDatagram(buf[:n], a.s.overlayAddr)
		if err != nil {
			a.s.log.Debug("socks5: dropped a UDP datagram", "err", err)
			continue
		}
		c := a.conn(dst, hdr)
		if c != nil {
			c.Write(payload)
		}
	}
}

// parseSOCKSDatagram reads a client's SOCKS5 UDP datagram: its overlay
// destination (a host name resolve turns into an overlay address, as
// Server.overlayAddr does), the header to put in front of answers, and the
// payload. Fragments and destinations outside the overlay are refused.
func parseSOCKSDatagram(b []byte, resolve func(string) (netip.Addr, error)) (netip.AddrPort, []byte, []byte, error) {
	d, err := statute.ParseDatagram(b)
	if err != nil {
		return netip.AddrPort{}, nil, nil, err
	}
	if d.Frag != 0 {
		return netip.AddrPort{}, nil, nil, fmt.Errorf("fragment %d: not supported", d.Frag)
	}
	host := d.DstAddr.FQDN
	if host == "" {
		host = d.DstAddr.IP.String()
	}
	addr, err := resolve(host)
	if err != nil {
		return netip.AddrPort{}, nil, nil, err
	}
	if d.DstAddr.Port <= 0 || d.DstAddr.Port > 65535 {
		return netip.AddrPort{}, nil, nil, fmt.Errorf("port %d: %w", d.DstAddr.Port, ErrBadPort)
	}
	return netip.AddrPortFrom(addr, uint16(d.DstAddr.Port)), d.Header(), d.Data, nil
}

// conn returns the userspace-stack socket to dst, making it (and its reader
// of answers) when new; past MaxUDPFlows the least recently used goes.
func (a *association) conn(dst netip.AddrPort, hdr []byte) net.Conn {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c := a.conns[dst]; c != nil {
		c.last = time.Now()
		return c.c
	}
	if len(a.conns) >= MaxUDPFlows {
		var oldK netip.AddrPort
		var old *assocConn
		for k, c := range a.conns {
			if old == nil || c.last.Before(old.last) {
				oldK, old = k, c
			}
		}
		old.c.Close()
		delete(a.conns, oldK)
	}
	uc, err := a.s.cfg.Overlay.DialUDPAddrPort(netip.AddrPort{}, dst)
	if err != nil {
		a.s.log.Debug("socks5: UDP to the overlay", "dst", dst, "err", err)
		return nil
	}
	ac := &assocConn{c: uc, hdr: hdr, last: time.Now()}
	a.conns[dst] = ac
	client := a.client
	go func() {
		b := make([]byte, MaxFrame)
		for {
			uc.SetReadDeadline(time.Now().Add(UDPIdle))
			n, err := uc.Read(b)
			if err != nil {
				break
			}
			out := append(append(make([]byte, 0, len(ac.hdr)+n), ac.hdr...), b[:n]...)
			a.pc.WriteToUDP(out, client)
		}
		uc.Close()
		a.mu.Lock()
		if a.conns[dst] == ac {
			delete(a.conns, dst)
		}
		a.mu.Unlock()
	}()
	return uc
}

func (a *association) closeAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, c := range a.conns {
		c.c.Close()
		delete(a.conns, k)
	}
}
