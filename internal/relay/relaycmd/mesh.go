package relaycmd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/mesh"
	"github.com/keymesh/keymesh/internal/relay"
	"github.com/keymesh/keymesh/internal/sockopt"
)

// startMesh opens the mesh socket on --mesh-listen and returns the node
// (serving until ctx ends) and the peer list. Forwards from other relays
// leave from out, the relay socket their peers bound to. Without
// --mesh-listen it returns a nil node.
func startMesh(ctx context.Context, o MeshOptions, out *net.UDPConn, reg prometheus.Registerer, log *slog.Logger) (*mesh.Node, mesh.Peers, error) {
	if o.Listen == "" {
		if o.SecretFile != "" {
			log.Info("--peer-secret-file without --mesh-listen: the mesh is off, every packet leaves from the relay it reached")
		}
		return nil, nil, nil
	}
	addr, err := netip.ParseAddrPort(o.Listen)
	if err != nil || addr.Addr().IsUnspecified() || addr.Port() == 0 {
		return nil, nil, usageErr("--mesh-listen %q: want this relay's own private ip:port (other relays send to it), e.g. 10.0.1.5:3490", o.Listen)
	}
	peers, err := mesh.ParsePeers(o.Peers)
	if err != nil {
		return nil, nil, usageErr("--mesh-peers: %v", err)
	}
	if own, ok := peers[uint16(o.Instance)]; ok && own != netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()) {
		return nil, nil, usageErr("--mesh-peers lists instance %d at %v but --mesh-listen is %v: make them agree", o.Instance, own, addr)
	}
	secret, err := crypto.ReadSecretFile(o.SecretFile, mesh.MinSecret)
	if err != nil {
		return nil, nil, usageErr("--peer-secret-file: %v", err)
	}
	key, err := mesh.NewKey(secret)
	if err != nil {
		return nil, nil, usageErr("--peer-secret-file: %v", err)
	}
	conn, err := sockopt.ListenUDP(ctx, addr.String(), false)
	if err != nil {
		return nil, nil, fmt.Errorf("--mesh-listen: %w", err)
	}
	n, err := mesh.NewNode(mesh.Config{
		Key: key, Conn: conn, Logger: log, Allow: peers.Addrs(),
		Handle: relay.DeliverRelayed(out, log),
	})
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if err := n.Register(reg); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("mesh metrics: %w", err)
	}
	go func() {
		defer conn.Close()
		if err := n.Serve(ctx); err != nil {
			log.Error("mesh socket stopped", "err", err)
		}
	}()
	log.Info("mesh on", "addr", n.Addr(), "instance", o.Instance, "peers", len(peers))
	return n, peers, nil
}
