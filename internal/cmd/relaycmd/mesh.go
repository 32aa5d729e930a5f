package relaycmd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/mesh"
	"github.com/keymesh/keymesh/internal/meshreg"
	"github.com/keymesh/keymesh/internal/relay"
	"github.com/keymesh/keymesh/internal/sockopt"

	"github.com/keymesh/keymesh/internal/cmd/usage"
)

// meshReaders bounds the goroutines reading the mesh socket.
const meshReaders = 4

// startMesh opens the mesh socket on --mesh-listen and returns the node
// (served by up to readers goroutines until ctx ends) and the relays'
// numbers and addresses: fixed by --instance and --mesh-peers, or kept up
// to date from --mesh-registry. Forwards from other relays leave from out,
// the relay socket their peers bound to. Without --mesh-listen it returns
// a nil node.
func startMesh(ctx context.Context, o MeshOptions, out *net.UDPConn, readers int, reg prometheus.Registerer, log *slog.Logger) (*mesh.Node, *mesh.Directory, error) {
	if o.Listen == "" {
		if o.SecretFile != "" {
			log.Info("--peer-secret-file without --mesh-listen: the mesh is off, every packet leaves from the relay it reached")
		}
		return nil, nil, nil
	}
	ma, err := o.parse()
	if err != nil {
		return nil, nil, err
	}
	addr, peers := ma.listen, ma.peers
	secret, err := crypto.ReadSecretFile(o.SecretFile, mesh.MinSecret)
	if err != nil {
		return nil, nil, usage.Errorf("--peer-secret-file: %v", err)
	}
	key, err := mesh.NewKey(secret)
	if err != nil {
		return nil, nil, usage.Errorf("--peer-secret-file: %v", err)
	}
	conn, err := sockopt.ListenUDP(ctx, addr.String(), false)
	if err != nil {
		return nil, nil, fmt.Errorf("--mesh-listen: %w", err)
	}
	var others []netip.AddrPort
	for id, a := range peers {
		if id != uint16(o.Instance) && a != ma.advertise {
			others = append(others, a)
		}
	}
	n, err := mesh.NewNode(mesh.Config{
		Key: key, Conn: conn, Logger: log, Allow: peers.Addrs(), Rate: o.Rate, Burst: max(o.Rate, 1), UnverifiedRate: o.Unverified,
		Handle: relay.DeliverRelayed(out, log), Peers: others, Advertise: ma.advertise,
	})
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if o.Registry != "" {
		n.SetAllow(nil) // no source accepted until the registry names one
	}
	if err := n.Register(reg); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("mesh metrics: %w", err)
	}
	// Other relays' forwards are relay traffic: read them with as many
	// goroutines as the relay socket has (at most meshReaders).
	var wg sync.WaitGroup
	for range min(max(readers, 1), meshReaders) {
		wg.Go(func() {
			if err := n.Serve(ctx); err != nil {
				log.Error("mesh socket stopped", "err", err)
			}
		})
	}
	wg.Go(func() { n.Heartbeat(ctx) })
	go func() { wg.Wait(); conn.Close() }()
	if o.Registry == "" {
		log.Info("mesh on", "addr", n.Addr(), "advertised", n.Self(), "instance", o.Instance, "peers", len(peers))
		return n, mesh.NewDirectory(uint16(o.Instance), peers), nil
	}
	dir := &mesh.Directory{}
	if err := meshreg.Join(ctx, o.Registry, "relay", n.Self(), log, meshreg.Apply(n, dir, log)); err != nil {
		return nil, nil, usage.Errorf("--mesh-registry: %v", err)
	}
	log.Info("mesh on", "addr", n.Addr(), "advertised", n.Self(), "instance", dir.Self(), "registry", true)
	return n, dir, nil
}
