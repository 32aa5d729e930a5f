package node

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/policy"
)

// Stream error codes sent when a stream is refused.
const (
	codeNoListener quic.StreamErrorCode = 1
	codeClosed     quic.StreamErrorCode = 2
	codeRefused    quic.StreamErrorCode = 3 // the allow policy refuses the port
)

// Addr is a stream endpoint: a peer and a port.
type Addr struct {
	ID      string
	Overlay netip.Addr
	Port    uint16
}

// Network returns "keymesh".
func (a *Addr) Network() string { return "keymesh" }

// String returns "[overlay]:port".
func (a *Addr) String() string { return netip.AddrPortFrom(a.Overlay, a.Port).String() }

func addrOf(id crypto.PeerID, port uint16) *Addr {
	return &Addr{ID: id.String(), Overlay: id.OverlayAddr(), Port: port}
}

// Conn is a stream to a peer: a net.Conn with half-close.
type Conn struct {
	str           *quic.Stream
	local, remote *Addr
	closeOnce     sync.Once
}

var _ net.Conn = (*Conn)(nil)

func (c *Conn) Read(b []byte) (int, error)         { return c.str.Read(b) }
func (c *Conn) Write(b []byte) (int, error)        { return c.str.Write(b) }
func (c *Conn) LocalAddr() net.Addr                { return c.local }
func (c *Conn) RemoteAddr() net.Addr               { return c.remote }
func (c *Conn) SetDeadline(t time.Time) error      { return c.str.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.str.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.str.SetWriteDeadline(t) }

// CloseWrite ends the sending direction (the peer reads EOF once it has
// everything); reading goes on.
func (c *Conn) CloseWrite() error { return c.str.Close() }

// CloseRead stops reading: the peer's further writes fail.
func (c *Conn) CloseRead() error {
	c.str.CancelRead(0)
	return nil
}

// Close ends both directions. What was written is still delivered while
// the session lasts.
func (c *Conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		err = c.str.Close()
		c.str.CancelRead(0)
	})
	return err
}

// Dial opens a stream to port 0 of peer (a peer ID or overlay address).
func (n *Node) Dial(ctx context.Context, peer string) (net.Conn, error) {
	return n.DialPort(ctx, peer, 0)
}

// DialPort opens a stream to port of peer (a peer ID or overlay address).
// The first stream to a peer sets up the session: the rendezvous
// introduces the two peers, the first packets take the relay, later ones
// the direct path once punched.
func (n *Node) DialPort(ctx context.Context, peer string, port uint16) (net.Conn, error) {
	for attempt := 0; ; attempt++ {
		qc, id, err := n.session(ctx, peer)
		if err != nil {
			return nil, err
		}
		str, err := qc.OpenStreamSync(ctx)
		if err != nil {
			// The session died meanwhile: one more try with a new one.
			if qc.Context().Err() != nil && attempt == 0 && ctx.Err() == nil {
				continue
			}
			return nil, fmt.Errorf("node: open stream to %s: %w", id.Short(), err)
		}
		var hdr [2]byte
		binary.BigEndian.PutUint16(hdr[:], port)
		if _, err := str.Write(hdr[:]); err != nil {
			str.CancelRead(0)
			return nil, fmt.Errorf("node: open stream to %s: %w", id.Short(), err)
		}
		return &Conn{str: str, local: addrOf(n.me, 0), remote: addrOf(id, port)}, nil
	}
}

// dispatch reads a new stream's port header and hands the stream to that
// port's listener.
func (n *Node) dispatch(id crypto.PeerID, str *quic.Stream) {
	var hdr [2]byte
	str.SetReadDeadline(time.Now().Add(headerTimeout))
	if _, err := io.ReadFull(str, hdr[:]); err != nil {
		str.CancelRead(codeClosed)
		str.CancelWrite(codeClosed)
		return
	}
	str.SetReadDeadline(time.Time{})
	port := binary.BigEndian.Uint16(hdr[:])
	if !n.policy.Allow(id, policy.TCP, port) {
		str.CancelRead(codeRefused)
		str.CancelWrite(codeRefused)
		return
	}
	n.mu.Lock()
	l := n.listeners[port]
	n.mu.Unlock()
	if l == nil {
		n.log.Debug("stream to a port without listener", "peer", id.Short(), "port", port)
		str.CancelRead(codeNoListener)
		str.CancelWrite(codeNoListener)
		return
	}
	c := &Conn{str: str, local: addrOf(n.me, port), remote: addrOf(id, 0)}
	select {
	case l.ch <- c:
	case <-l.done:
		str.CancelRead(codeClosed)
		str.CancelWrite(codeClosed)
	}
}

// listener queues the streams to one port.
type listener struct {
	n    *Node
	port uint16
	ch   chan *Conn
	done chan struct{}
	once sync.Once
}

func newListener(n *Node, port uint16) *listener {
	return &listener{n: n, port: port, ch: make(chan *Conn, 64), done: make(chan struct{})}
}

// Listen returns the listener of streams to port 0.
func (n *Node) Listen() net.Listener {
	n.mu.Lock()
	defer n.mu.Unlock()
	if l := n.listeners[0]; l != nil {
		return l
	}
	l := newListener(n, 0)
	if !n.closed {
		n.listeners[0] = l
	} else {
		l.once.Do(func() { close(l.done) })
	}
	return l
}

// ListenPort returns a listener of streams to port; port 0 is Listen's.
func (n *Node) ListenPort(port uint16) (net.Listener, error) {
	if port == 0 {
		return n.Listen(), nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrClosed
	}
	if n.listeners[port] != nil {
		return nil, fmt.Errorf("node: port %d: %w", port, ErrPortInUse)
	}
	l := newListener(n, port)
	n.listeners[port] = l
	return l, nil
}

// Accept waits for the next stream.
func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, fmt.Errorf("node: port %d: %w", l.port, net.ErrClosed)
	}
}

// Close stops the listener; streams still queued are refused.
func (l *listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.n.mu.Lock()
		if l.n.listeners[l.port] == l {
			delete(l.n.listeners, l.port)
		}
		l.n.mu.Unlock()
		for {
			select {
			case c := <-l.ch:
				c.str.CancelRead(codeClosed)
				c.str.CancelWrite(codeClosed)
			default:
				return
			}
		}
	})
	return nil
}

// Addr returns the node's overlay address with the listener's port.
func (l *listener) Addr() net.Addr { return addrOf(l.n.me, l.port) }
