package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/pathsock"
	"github.com/keymesh/keymesh/internal/rzclient"
)

// dialCall is one session being set up; concurrent dials to the same peer
// wait for it.
type dialCall struct {
	done chan struct{}
	conn *quic.Conn
	err  error
}

// target is a parsed peer name: an ID, or an overlay address (ID unknown
// until the rendezvous answers).
type target struct {
	id   crypto.PeerID
	addr netip.Addr
}

func parseTarget(s string) (target, error) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		a = a.Unmap().WithZone("")
		if !crypto.IsOverlay(a) {
			return target{}, fmt.Errorf("node: %s is not an overlay address (those are in %s)", a, crypto.OverlayPrefix)
		}
		return target{addr: a}, nil
	}
	id, err := crypto.ParsePeerID(s)
	if err != nil {
		return target{}, fmt.Errorf("node: peer %w; or give an overlay address (in %s)", err, crypto.OverlayPrefix)
	}
	return target{id: id, addr: id.OverlayAddr()}, nil
}

// knownID finds the peer ID of t among live sessions and known paths.
func (n *Node) knownID(t target) (crypto.PeerID, bool) {
	if !t.id.IsZero() {
		return t.id, true
	}
	n.mu.Lock()
	for id := range n.conns {
		if id.OverlayAddr() == t.addr {
			n.mu.Unlock()
			return id, true
		}
	}
	n.mu.Unlock()
	for _, p := range n.sock.Peers() {
		if p.ID.OverlayAddr() == t.addr {
			return p.ID, true
		}
	}
	return crypto.PeerID{}, false
}

// liveConn returns the live session with id, if any.
func (n *Node) liveConn(id crypto.PeerID) *quic.Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := n.conns[id]
	if c != nil && c.Context().Err() != nil {
		delete(n.conns, id)
		delete(n.byAddr, id.OverlayAddr())
		return nil
	}
	return c
}

// session returns a live session with the peer named s, making one.
func (n *Node) session(ctx context.Context, s string) (*quic.Conn, crypto.PeerID, error) {
	t, err := parseTarget(s)
	if err != nil {
		return nil, crypto.PeerID{}, err
	}
	if id, ok := n.knownID(t); ok {
		if c := n.liveConn(id); c != nil {
			return c, id, nil
		}
	}
	if t.id == n.me || t.addr == n.me.OverlayAddr() {
		return nil, n.me, fmt.Errorf("node: %s is this node itself", s)
	}
	id, err := n.introduce(ctx, t)
	if err != nil {
		return nil, id, err
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, id, ErrClosed
	}
	if c := n.conns[id]; c != nil && c.Context().Err() == nil {
		n.mu.Unlock()
		return c, id, nil
	}
	call := n.dialing[id]
	if call == nil {
		call = &dialCall{done: make(chan struct{})}
		n.dialing[id] = call
		n.mu.Unlock()
		call.conn, call.err = n.dial(ctx, id)
		n.mu.Lock()
		delete(n.dialing, id)
		close(call.done)
		n.mu.Unlock()
	} else {
		n.mu.Unlock()
		select {
		case <-call.done:
		case <-ctx.Done():
			return nil, id, ctx.Err()
		}
	}
	return call.conn, id, call.err
}

// introduce asks the rendezvous for the peer's addresses (which also makes
// the peer punch towards us) and hands them to the path layer. When the
// rendezvous does not answer but the path layer already knows the peer,
// the session goes ahead on the known paths.
func (n *Node) introduce(ctx context.Context, t target) (crypto.PeerID, error) {
	name := t.addr.String()
	if !t.id.IsZero() {
		name = t.id.String()
	}
	start := time.Now()
	reply, err := n.rz.Connect(ctx, name)
	if err != nil {
		if errors.Is(err, rzclient.ErrPeerNotFound) {
			return t.id, fmt.Errorf("node: %w: %s is not registered with %s, or does not allow this peer (ask its owner to run with --allow %s)",
				ErrPeerNotFound, name, n.server, n.me)
		}
		if id, ok := n.knownID(t); ok && ctx.Err() == nil {
			if st, ok := n.sock.Peer(id); ok && st.Path != pathsock.PathNone {
				n.log.Warn("rendezvous did not introduce us; using the known path", "peer", id.Short(), "err", err)
				return id, nil
			}
		}
		return t.id, fmt.Errorf("node: %w", err)
	}
	id := reply.Peer.ID
	if (!t.id.IsZero() && id != t.id) || !id.Owns(t.addr) {
		return id, fmt.Errorf("node: rendezvous answered for %s with peer %s: refusing the mismatch", name, id.Short())
	}
	if err := n.sock.AddPeer(reply.Peer, time.UnixMilli(reply.Start)); err != nil {
		return id, fmt.Errorf("node: peer %s: %w", id.Short(), err)
	}
	n.watchTraversal(id, reply.Peer.NAT, true, start)
	return id, nil
}

// dial makes a new QUIC session with id.
func (n *Node) dial(ctx context.Context, id crypto.PeerID) (*quic.Conn, error) {
	c, err := n.tr.Dial(ctx, pathsock.VirtualAddr(id), n.stls.client(id), n.qconf)
	if err == nil {
		// In TLS 1.3 the server checks the client's certificate after the
		// client is done: wait for the acceptor's confirmation, so that a
		// refusal shows here and not on the first read.
		if err = awaitConfirm(ctx, c); err != nil {
			c.CloseWithError(0, "")
		}
	}
	if err != nil {
		var te *quic.TransportError
		if errors.As(err, &te) && te.Remote && te.ErrorCode >= 0x100 && te.ErrorCode < 0x200 {
			return nil, fmt.Errorf("node: %w: %s does not allow this peer (%s): ask its owner to start the daemon with --allow %s or --allow-any (%v)",
				ErrRefused, id, n.me, n.me, err)
		}
		if st, ok := n.sock.Peer(id); ok && st.Path == pathsock.PathNone {
			return nil, fmt.Errorf("node: session with %s: no path (no relay ticket and no direct path): %w", id.Short(), err)
		}
		return nil, fmt.Errorf("node: session with %s: %w", id.Short(), err)
	}
	n.addConn(id, c)
	return c, nil
}

// addConn records a session and serves its incoming streams.
func (n *Node) addConn(id crypto.PeerID, c *quic.Conn) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		c.CloseWithError(0, "node closing")
		return
	}
	if old := n.conns[id]; old == nil || old.Context().Err() != nil {
		n.conns[id] = c
		n.byAddr[id.OverlayAddr()] = id
	}
	n.wg.Add(2)
	n.mu.Unlock()
	go func() {
		defer n.wg.Done()
		n.serveConn(id, c)
	}()
	go func() {
		defer n.wg.Done()
		n.receivePackets(id, c)
	}()
}

func (n *Node) acceptLoop() {
	defer n.wg.Done()
	for {
		c, err := n.ql.Accept(n.ctx)
		if err != nil {
			return
		}
		certs := c.ConnectionState().TLS.PeerCertificates
		if len(certs) == 0 {
			c.CloseWithError(1, "no certificate")
			continue
		}
		id, err := crypto.PeerFromCertificate(certs[0].Raw)
		if err != nil {
			c.CloseWithError(1, "bad certificate")
			continue
		}
		n.log.Debug("session accepted", "peer", id.Short())
		go confirm(c)
		n.addConn(id, c)
	}
}

// serveConn accepts the session's streams until it ends.
func (n *Node) serveConn(id crypto.PeerID, c *quic.Conn) {
	defer func() {
		n.mu.Lock()
		if n.conns[id] == c {
			delete(n.conns, id)
			delete(n.byAddr, id.OverlayAddr())
		}
		n.mu.Unlock()
	}()
	for {
		str, err := c.AcceptStream(n.ctx)
		if err != nil {
			n.log.Debug("session ended", "peer", id.Short(), "err", err)
			return
		}
		go n.dispatch(id, str)
	}
}

// confirm tells the dialer that its certificate was accepted: the acceptor
// opens one unidirectional stream and writes one byte on it.
func confirm(c *quic.Conn) {
	s, err := c.OpenUniStream()
	if err != nil {
		return
	}
	s.Write([]byte{1})
	s.Close()
}

// awaitConfirm waits for the acceptor's confirmation.
func awaitConfirm(ctx context.Context, c *quic.Conn) error {
	s, err := c.AcceptUniStream(ctx)
	if err != nil {
		return err
	}
	var b [1]byte
	if _, err := io.ReadFull(s, b[:]); err != nil {
		return err
	}
	return nil
}
