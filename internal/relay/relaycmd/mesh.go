package relaycmd

import (
	"context"
	"fmt"
	"log/slog"
	"net"

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
	addr, peers, err := o.parse()
	if err != nil {
		return nil, nil, err
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
