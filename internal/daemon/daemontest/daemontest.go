// Package daemontest holds a fake daemon.Node for unit tests of the daemon's
// API handlers and of the CLI: streams are loopback TCP pairs, so half-close
// behaves as on a real stream. It proves nothing about the real data path
// (the end-to-end test in package peercmd does).
package daemontest

import (
	"context"
	"fmt"
	"github.com/keymesh/keymesh/internal/netcheck"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/daemon"
)

// Node is a fake daemon.Node. Set its fields before the daemon uses it.
type Node struct {
	t testing.TB
	// Self and Overlay are its ID and overlay address.
	Self    string
	Overlay netip.Addr

	mu      sync.Mutex
	state   daemon.Status
	pingErr error
	slow    map[string]bool
	remotes map[string]func(c net.Conn, port uint16)
	lns     map[uint16]*Listener
}

// New returns a fake node with nothing to reach.
func New(t testing.TB) *Node {
	return &Node{
		t:       t,
		Self:    "self",
		Overlay: netip.MustParseAddr("fd4b::1"),
		remotes: map[string]func(net.Conn, uint16){},
		lns:     map[uint16]*Listener{0: newListener()},
	}
}

// Remote makes peer reachable: each stream to it runs serve with the
// remote end. Dials to unknown peers fail with a refusal.
func (f *Node) Remote(peer string, serve func(c net.Conn, port uint16)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.remotes[peer] = serve
}

// SetStatus sets what Status returns.
func (f *Node) SetStatus(st daemon.Status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = st
}

// SetPingErr makes every Ping fail with err (nil: succeed). Without it a
// ping to a peer marked Slow waits for its context and any other succeeds
// over "direct" in 1.5 ms.
func (f *Node) SetPingErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pingErr = err
}

// Slow makes pings to peer go unanswered until their context ends.
func (f *Node) Slow(peer string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.slow == nil {
		f.slow = map[string]bool{}
	}
	f.slow[peer] = true
}

// Status implements daemon.Node.
func (f *Node) Status() daemon.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}

// Node implements daemon.Node.
var _ daemon.Node = (*Node)(nil)

func (f *Node) ID() string              { return f.Self }
func (f *Node) OverlayAddr() netip.Addr { return f.Overlay }
func (f *Node) Listen() net.Listener    { return f.lns[0] }

func (f *Node) ListenPort(port uint16) (net.Listener, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l := f.lns[port]; l != nil && !l.IsClosed() {
		return nil, fmt.Errorf("port %d: already listening", port)
	}
	l := newListener()
	f.lns[port] = l
	return l, nil
}

// Listener returns what listens on port, if anything.
func (f *Node) Listener(port uint16) *Listener {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lns[port]
}

func (f *Node) Ping(ctx context.Context, peer string) (daemon.PingResult, error) {
	f.mu.Lock()
	err, slow := f.pingErr, f.slow[peer]
	f.mu.Unlock()
	if err != nil {
		return daemon.PingResult{}, err
	}
	if slow {
		<-ctx.Done()
		return daemon.PingResult{}, ctx.Err()
	}
	return daemon.PingResult{Peer: peer, Overlay: "fd4b::2", Path: "direct", Remote: "127.0.0.1:9", RTT: 1500 * time.Microsecond}, nil
}

func (f *Node) DialPort(ctx context.Context, peer string, port uint16) (net.Conn, error) {
	f.mu.Lock()
	h := f.remotes[peer]
	f.mu.Unlock()
	if h == nil {
		return nil, fmt.Errorf("peer %s refused the session: not in its allow list", peer)
	}
	a, b := TCPPair(f.t)
	go h(b, port)
	return a, nil
}

// Incoming makes a stream arrive at port and returns the remote's end.
func (f *Node) Incoming(port uint16) net.Conn {
	l := f.Listener(port)
	if l == nil {
		f.t.Fatalf("nothing listens on port %d", port)
	}
	a, b := TCPPair(f.t)
	l.ch <- a
	return b
}

// Listener is the fake node's listener, fed by Incoming.
type Listener struct {
	ch     chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func newListener() *Listener {
	return &Listener{ch: make(chan net.Conn, 8), closed: make(chan struct{})}
}

func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *Listener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// IsClosed reports whether the listener was closed.
func (l *Listener) IsClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

func (l *Listener) Addr() net.Addr { return &net.TCPAddr{} }

// TCPPair returns the two ends of a loopback TCP connection, closed at
// the end of the test.
func TCPPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { a.Close(); r.c.Close() })
	return a, r.c
}

// Netcheck reports a fixed, plausible result.
func (f *Node) Netcheck(ctx context.Context) (netcheck.Report, error) {
	return netcheck.Report{UDP: true, Mapping: netcheck.EndpointIndependent, Filtering: netcheck.AddressAndPortDependent}, nil
}

// UpperAfterEOF is a remote (Node.Remote) that reads everything, then
// answers it in upper case with " port <port>" and closes: it only answers
// when the half-close came through.
func UpperAfterEOF(c net.Conn, port uint16) {
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil {
		return
	}
	c.Write([]byte(strings.ToUpper(string(b)) + " port " + strconv.Itoa(int(port))))
}
