package node

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/pathsock"
	"github.com/keymesh/keymesh/internal/rzclient"
	"github.com/keymesh/keymesh/internal/streamclient"
	"github.com/keymesh/keymesh/internal/wire"
)

// DefaultUDPTimeout is how long a node with a stream relay waits for the
// rendezvous to answer over UDP at start before it takes the TLS tunnel.
const DefaultUDPTimeout = 3 * time.Second

// udpTick is the period of the UDP watch loop.
const udpTick = 50 * time.Millisecond

// probeConn is the UDP socket a node in the tunnel probes from: a real
// *net.UDPConn, which the path layer gets back on the return (tests hand
// one that drops what it sends).
type probeConn interface {
	pathsock.PacketConn
	SetReadDeadline(time.Time) error
}

// fallback is the node's stream relay fallback: the watch (udpwatch.go)
// and, while the path layer runs in the tunnel, the tunnel, the UDP socket
// the node probes from and the client that probes.
type fallback struct {
	listen func(addr string) (probeConn, error) // opens the probe socket
	probe  *rzclient.Client                     // keepalives over the probe socket

	mu       sync.Mutex
	w        udpWatch
	laddr    string             // the UDP socket's address, to reopen on
	conn     probeConn          // the probe socket while tunnelled
	stop     context.CancelFunc // ends the tunnel's upkeep and the probe reader
	readDone chan struct{}      // closed when the probe reader ended
}

func listenProbe(addr string) (probeConn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(4 << 20) // as the path layer's own socket
	_ = c.SetWriteBuffer(4 << 20)
	return c, nil
}

// natBehaviour is what the node reports of its NAT: a node in a stream
// tunnel says UDP is blocked, so peers reach it through the relay; else
// the path layer's finding (rendezvous against relay observed address).
func (n *Node) natBehaviour() wire.NAT {
	// The path layer asks from its own goroutines, which may start
	// before New has stored n.sock: read it through sockReady.
	s := n.sockReady.Load()
	if s == nil {
		return wire.NATUnknown
	}
	if s.Tunneled() {
		return wire.NATUDPBlocked
	}
	return s.NATBehaviour()
}

// initFallback prepares the fallback of a node with a stream relay: the
// probe client (sharing the main client's replay cache, so a frame one
// took cannot be replayed to the other).
func (n *Node) initFallback(rcfg rzclient.Config) error {
	n.fb.listen = listenProbe
	rcfg.Send = func(b []byte, to netip.AddrPort) error {
		n.fb.mu.Lock()
		c := n.fb.conn
		n.fb.mu.Unlock()
		if c == nil {
			return net.ErrClosed
		}
		_, err := c.WriteToUDPAddrPort(b, to)
		return err
	}
	rcfg.OnAsk = nil
	rcfg.OnAnswer = func() {
		n.fb.mu.Lock()
		n.fb.w.probeHeard()
		n.fb.mu.Unlock()
	}
	rcfg.OnPunch, rcfg.OnRegistered = nil, nil
	rcfg.Keepalive = 0
	rcfg.Logger = n.log.With("part", "udp-probe")
	var err error
	n.fb.probe, err = rzclient.New(rcfg)
	return err
}

// onAsk and onAnswer are the main rendezvous client's signals.
func (n *Node) onAsk() {
	n.fb.mu.Lock()
	n.fb.w.ask(time.Now())
	n.fb.mu.Unlock()
}

func (n *Node) onAnswer() {
	n.fb.mu.Lock()
	n.fb.w.heard(time.Now())
	n.fb.mu.Unlock()
}

// watchUDP runs the watch until the node closes.
func (n *Node) watchUDP() {
	defer n.wg.Done()
	t := time.NewTicker(udpTick)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		relay := n.sock.RelayAnswered()
		direct := false
		for _, p := range n.sock.Peers() {
			direct = direct || p.Path == pathsock.PathDirect
		}
		n.fb.mu.Lock()
		a := n.fb.w.tick(now, relay, direct)
		n.fb.mu.Unlock()
		switch a {
		case udpCheckRelays:
			n.log.Info("the rendezvous does not answer over UDP: asking the relays")
			n.sock.CheckRelays()
		case udpLeave:
			n.log.Warn("nothing answers over UDP: moving into the TLS stream relay", "relay", n.stream.URL)
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			err := n.useTunnel(ctx)
			cancel()
			if err != nil {
				n.log.Warn("stream relay failed; staying on UDP", "err", err)
				n.fb.mu.Lock()
				n.fb.w.dialFailed(time.Now())
				n.fb.mu.Unlock()
			}
		case udpProbe:
			if err := n.fb.probe.Ping(); err != nil {
				n.log.Debug("UDP probe", "err", err)
			}
		case udpReturn:
			if err := n.leaveTunnel(); err != nil {
				n.log.Warn("could not move back to UDP", "err", err)
			}
		}
	}
}

// useTunnel opens a tunnel to the stream relay, moves the path layer into
// it (the layer re-registers through it and tells its peers), opens the
// UDP socket to probe from on the port the layer had, and keeps the
// tunnel open: when it breaks, a new one replaces it.
func (n *Node) useTunnel(ctx context.Context) error {
	laddr := n.sock.LocalAddrPort()
	tun, err := streamclient.Dial(ctx, n.stream, n.id, nil)
	if err != nil {
		return err
	}
	n.fb.mu.Lock()
	defer n.fb.mu.Unlock()
	if err := n.sock.UseConn(tun); err != nil {
		tun.Close()
		return err
	}
	n.log.Info("running over the TLS stream relay", "presence", tun.Presence().String())
	n.rz.Reregister()
	n.fb.w.entered(time.Now())
	tctx, stop := context.WithCancel(n.ctx)
	n.fb.stop = stop
	n.wg.Add(1)
	go n.keepTunnel(tctx, tun)
	n.fb.laddr = laddr.String()
	n.openProbe(tctx)
	return nil
}

// openProbe opens the probe socket and starts its reader; the caller holds
// fb.mu. Without one the node stays in the tunnel (logged).
func (n *Node) openProbe(ctx context.Context) {
	c, err := n.fb.listen(n.fb.laddr)
	if err != nil {
		// The port was taken meanwhile: any port.
		host, _, _ := net.SplitHostPort(n.fb.laddr)
		if c, err = n.fb.listen(net.JoinHostPort(host, "0")); err != nil {
			n.log.Warn("no UDP socket to probe from: staying in the tunnel", "err", err)
			return
		}
	}
	n.fb.conn = c
	done := make(chan struct{})
	n.fb.readDone = done
	n.wg.Add(1)
	go n.readProbe(ctx, c, done)
}

// readProbe passes what the probe socket receives from the rendezvous to
// the probe client, until ctx ends.
func (n *Node) readProbe(ctx context.Context, c probeConn, done chan struct{}) {
	defer n.wg.Done()
	defer close(done)
	buf := make([]byte, 2048)
	for ctx.Err() == nil {
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		k, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if from == n.srv {
			n.fb.probe.HandleFrame(buf[:k], from)
		}
	}
}

// leaveTunnel moves the path layer back onto the probe socket (which UDP
// was just seen to work through); the layer re-registers, rebinds its
// relays and tells its peers, and the tunnel closes.
func (n *Node) leaveTunnel() error {
	n.fb.mu.Lock()
	defer n.fb.mu.Unlock()
	c := n.fb.conn
	if c == nil {
		return errors.New("no UDP socket")
	}
	n.fb.stop() // the tunnel's upkeep and the reader end
	n.fb.mu.Unlock()
	<-n.fb.readDone
	n.fb.mu.Lock()
	_ = c.SetReadDeadline(time.Time{})
	n.fb.conn = nil
	if err := n.sock.UseConn(c); err != nil {
		c.Close()
		return err
	}
	n.fb.w.left(time.Now())
	n.log.Info("UDP answers again: left the TLS stream relay", "local", n.sock.LocalAddrPort().String())
	n.rz.Reregister()
	return nil
}

// keepTunnel replaces the tunnel when it breaks, until ctx ends (the node
// closes or returns to UDP).
func (n *Node) keepTunnel(ctx context.Context, tun *streamclient.Tunnel) {
	defer n.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tun.Done():
		}
		backoff := 500 * time.Millisecond
		for {
			if ctx.Err() != nil {
				return
			}
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			next, err := streamclient.Dial(dctx, n.stream, n.id, nil)
			cancel()
			if err == nil {
				n.fb.mu.Lock()
				if ctx.Err() != nil {
					n.fb.mu.Unlock()
					next.Close()
					return
				}
				err := n.sock.UseConn(next)
				n.fb.mu.Unlock()
				if err != nil {
					next.Close()
					return
				}
				n.log.Info("stream tunnel reopened", "presence", next.Presence().String())
				n.rz.Reregister()
				tun = next
				break
			}
			n.log.Warn("stream tunnel lost; retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
		}
	}
}

// closeFallback closes the probe socket, if any (the node is closing).
func (n *Node) closeFallback() {
	n.fb.mu.Lock()
	c := n.fb.conn
	n.fb.conn = nil
	n.fb.mu.Unlock()
	if c != nil {
		c.Close()
	}
}
