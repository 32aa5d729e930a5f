package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/quic-go/quic-go"

	"github.com/keymesh/keymesh/internal/crypto"
)

// PacketHandler receives one IP packet that a peer sent as a QUIC datagram
// (RFC 9221). from is the sender's overlay address, derived from the key it
// authenticated the session with: the only source address the packet may
// carry. The handler must not keep pkt after it returns. (An alias, so that
// packages can name the signature without importing node.)
type PacketHandler = func(from netip.Addr, pkt []byte)

// TooBigError is SendPacket's answer to a packet larger than the session
// carries in one datagram.
type TooBigError struct{ Max int }

func (e *TooBigError) Error() string {
	return fmt.Sprintf("node: packet larger than the %d bytes a datagram carries", e.Max)
}

// MaxPacket returns the largest packet a datagram carries (for callers that
// match the error by this method instead of by type).
func (e *TooBigError) MaxPacket() int { return e.Max }

// noSessionError is ErrNoSession's type: its NoSession method lets callers
// match it without importing node.
type noSessionError struct{}

func (noSessionError) Error() string   { return "no live session with that peer" }
func (noSessionError) NoSession() bool { return true }

// HandlePackets sets the handler of the packets that peers send; nil drops
// them. Without a handler every received datagram is dropped.
func (n *Node) HandlePackets(h PacketHandler) {
	if h == nil {
		n.packets.Store(nil)
		return
	}
	n.packets.Store(&h)
}

// SendPacket sends pkt as one QUIC datagram to the peer that owns the
// overlay address dst, over the live session with it. Without one it fails
// at once with ErrNoSession (Connect makes one). It blocks while the
// session's datagram queue (32 packets) is full.
func (n *Node) SendPacket(dst netip.Addr, pkt []byte) error {
	n.mu.Lock()
	id, ok := n.byAddr[dst]
	var c *quic.Conn
	if ok {
		c = n.conns[id]
	}
	n.mu.Unlock()
	if c == nil || c.Context().Err() != nil {
		return ErrNoSession
	}
	err := c.SendDatagram(pkt)
	if err == nil {
		return nil
	}
	var big *quic.DatagramTooLargeError
	if errors.As(err, &big) {
		return &TooBigError{Max: int(big.MaxDatagramPayloadSize)}
	}
	return fmt.Errorf("node: send packet to %s: %w", id.Short(), err)
}

// Connect makes a session with peer (a peer ID or overlay address) unless
// one is live.
func (n *Node) Connect(ctx context.Context, peer string) error {
	_, _, err := n.session(ctx, peer)
	return err
}

// receivePackets hands the session's datagrams to the packet handler until
// the session ends. quic-go queues at most 128 received datagrams per
// session and drops the rest.
func (n *Node) receivePackets(id crypto.PeerID, c *quic.Conn) {
	from := id.OverlayAddr()
	for {
		b, err := c.ReceiveDatagram(c.Context())
		if err != nil {
			return
		}
		if h := n.packets.Load(); h != nil {
			(*h)(from, b)
		}
	}
}
