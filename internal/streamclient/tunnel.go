package streamclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/keymesh/keymesh/internal/crypto"
)

// Tunnel is the client end: a net.PacketConn whose datagrams travel through
// the relay's presence socket. LocalAddr is the presence address, which is
// how the rest of the world sees this peer.
type Tunnel struct {
	ws       *websocket.Conn
	presence netip.AddrPort
	ctx      context.Context
	cancel   context.CancelFunc

	in chan datagram

	mu           sync.Mutex
	readDeadline time.Time
	deadlineCh   chan struct{} // closed and replaced when the deadline changes

	wmu  sync.Mutex
	wbuf []byte

	closeOnce sync.Once
	err       error
}

type datagram struct {
	from netip.AddrPort
	b    []byte
}

// Dial opens a tunnel to target (see ParseTarget), proving identity id.
// tlsConf may be nil, and is then target.TLS(nil).
func Dial(ctx context.Context, target Target, id *crypto.Identity, tlsConf *tls.Config) (*Tunnel, error) {
	if tlsConf == nil {
		tlsConf = target.TLS(nil)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf, Proxy: http.ProxyFromEnvironment}}
	ws, _, err := websocket.Dial(ctx, target.URL, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return nil, fmt.Errorf("stream relay %s: %w", target.URL, err)
	}
	ws.SetReadLimit(AddrLen + MaxPayload + 16)
	if err := ws.Write(ctx, websocket.MessageBinary, AppendClientHello(nil, id, time.Now())); err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("stream relay hello: %w", err)
	}
	_, b, err := ws.Read(ctx)
	if err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("stream relay hello: %w", err)
	}
	presence, err := ParseServerHello(b)
	if err != nil {
		ws.CloseNow()
		return nil, err
	}
	tctx, cancel := context.WithCancel(context.Background())
	t := &Tunnel{ws: ws, presence: presence, ctx: tctx, cancel: cancel, in: make(chan datagram, 512), deadlineCh: make(chan struct{})}
	go t.readLoop()
	return t, nil
}

func (t *Tunnel) readLoop() {
	defer close(t.in)
	for {
		typ, b, err := t.ws.Read(t.ctx)
		if err != nil {
			t.fail(err)
			t.cancel()
			return
		}
		if typ != websocket.MessageBinary {
			continue
		}
		from, payload, err := ParseDatagram(b)
		if err != nil {
			continue
		}
		select {
		case t.in <- datagram{from: from, b: payload}:
		default: // the reader is behind: drop, as a full socket buffer would
		}
	}
}

func (t *Tunnel) fail(err error) {
	t.mu.Lock()
	if t.err == nil {
		t.err = err
	}
	t.mu.Unlock()
}

// Presence returns the tunnel's UDP address on the relay.
func (t *Tunnel) Presence() netip.AddrPort { return t.presence }

// ReadFrom implements net.PacketConn.
func (t *Tunnel) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		t.mu.Lock()
		dl, dch := t.readDeadline, t.deadlineCh
		t.mu.Unlock()
		var timer <-chan time.Time
		var tm *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			tm = time.NewTimer(d)
			timer = tm.C
		}
		select {
		case d, ok := <-t.in:
			stop(tm)
			if !ok {
				return 0, nil, t.closedErr()
			}
			n := copy(p, d.b)
			return n, net.UDPAddrFromAddrPort(d.from), nil
		case <-timer:
			return 0, nil, os.ErrDeadlineExceeded
		case <-dch:
			stop(tm) // the deadline changed: look again
		}
	}
}

func (t *Tunnel) closedErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil && !errors.Is(t.err, context.Canceled) {
		return fmt.Errorf("%w: %v", net.ErrClosed, t.err)
	}
	return net.ErrClosed
}

// WriteTo implements net.PacketConn.
func (t *Tunnel) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("stream tunnel: address %v is not UDP", addr)
	}
	if len(p) > MaxPayload {
		return 0, ErrTooLarge
	}
	ap := ua.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.wbuf = AppendDatagram(t.wbuf[:0], ap, p)
	ctx, cancel := context.WithTimeout(t.ctx, 5*time.Second)
	defer cancel()
	if err := t.ws.Write(ctx, websocket.MessageBinary, t.wbuf); err != nil {
		t.fail(err)
		return 0, fmt.Errorf("stream tunnel: %w", err)
	}
	return len(p), nil
}

// Close implements net.PacketConn.
func (t *Tunnel) Close() error {
	t.closeOnce.Do(func() {
		t.cancel()
		t.ws.Close(websocket.StatusNormalClosure, "")
	})
	return nil
}

// Done is closed when the tunnel has ended.
func (t *Tunnel) Done() <-chan struct{} { return t.ctx.Done() }

// LocalAddr implements net.PacketConn: the presence address.
func (t *Tunnel) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(t.presence) }

// SetDeadline implements net.PacketConn (read side only; writes are bounded
// by their own timeout).
func (t *Tunnel) SetDeadline(d time.Time) error { return t.SetReadDeadline(d) }

// SetReadDeadline implements net.PacketConn.
func (t *Tunnel) SetReadDeadline(d time.Time) error {
	t.mu.Lock()
	t.readDeadline = d
	close(t.deadlineCh)
	t.deadlineCh = make(chan struct{})
	t.mu.Unlock()
	return nil
}

// SetWriteDeadline implements net.PacketConn; writes time out on their own.
func (t *Tunnel) SetWriteDeadline(time.Time) error { return nil }

func stop(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// ReadFromUDPAddrPort is ReadFrom with the source as a netip.AddrPort, the
// form a peer's path layer reads with.
func (t *Tunnel) ReadFromUDPAddrPort(p []byte) (int, netip.AddrPort, error) {
	n, a, err := t.ReadFrom(p)
	if err != nil {
		return n, netip.AddrPort{}, err
	}
	return n, a.(*net.UDPAddr).AddrPort(), nil
}

// WriteToUDPAddrPort is WriteTo with a netip.AddrPort destination.
func (t *Tunnel) WriteToUDPAddrPort(p []byte, addr netip.AddrPort) (int, error) {
	return t.WriteTo(p, net.UDPAddrFromAddrPort(addr))
}

// SetReadBuffer does nothing: the tunnel has its own queue.
func (t *Tunnel) SetReadBuffer(int) error { return nil }

// SetWriteBuffer does nothing: writes go straight to the TLS stream.
func (t *Tunnel) SetWriteBuffer(int) error { return nil }
