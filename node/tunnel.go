package node

import (
	"context"
	"time"

	"github.com/keymesh/keymesh/internal/streamclient"
	"github.com/keymesh/keymesh/internal/wire"
)

// DefaultUDPTimeout is how long a node with a stream relay waits for the
// rendezvous to answer over UDP before it takes the TLS tunnel.
const DefaultUDPTimeout = 3 * time.Second

// natBehaviour is what the node reports of its NAT: a node in a stream
// tunnel says UDP is blocked, so peers reach it through the relay; else
// the path layer's finding (rendezvous against relay observed address).
func (n *Node) natBehaviour() wire.NAT {
	if n.sock == nil {
		return wire.NATUnknown
	}
	if n.sock.Tunneled() {
		return wire.NATUDPBlocked
	}
	return n.sock.NATBehaviour()
}

// useTunnel opens a tunnel to the stream relay, moves the path layer into
// it, and keeps it open: when it breaks, a new one replaces it.
func (n *Node) useTunnel(ctx context.Context) error {
	tun, err := streamclient.Dial(ctx, n.stream, n.id, nil)
	if err != nil {
		return err
	}
	if err := n.sock.UseConn(tun); err != nil {
		tun.Close()
		return err
	}
	n.log.Info("running over the TLS stream relay", "presence", tun.Presence().String())
	n.rz.Reregister()
	n.wg.Add(1)
	go n.keepTunnel(tun)
	return nil
}

func (n *Node) keepTunnel(tun *streamclient.Tunnel) {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tun.Done():
		}
		backoff := 500 * time.Millisecond
		for {
			if n.ctx.Err() != nil {
				return
			}
			ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
			next, err := streamclient.Dial(ctx, n.stream, n.id, nil)
			cancel()
			if err == nil {
				if err := n.sock.UseConn(next); err != nil {
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
			case <-n.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
		}
	}
}
