package rendezvouscmd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/mesh"
	"github.com/keymesh/keymesh/internal/meshreg"
	"github.com/keymesh/keymesh/internal/rendezvous"
	"github.com/keymesh/keymesh/internal/sockopt"

	"github.com/keymesh/keymesh/internal/cmd/usage"
)

// startMesh opens the mesh socket on --mesh-listen and returns the node
// (its Serve loop running until ctx ends) that sends Punches through their
// peers' home instances and delivers those forwarded here from out, the
// rendezvous socket. With no --mesh-listen it returns nil.
func startMesh(ctx context.Context, o Options, out *net.UDPConn, reg prometheus.Registerer, log *slog.Logger) (*mesh.Node, error) {
	if o.MeshListen == "" {
		if o.PeerSecretFile != "" {
			log.Info("--peer-secret-file without --mesh-listen: the mesh is off, every Punch leaves from this instance")
		}
		return nil, nil
	}
	addr, err := netip.ParseAddrPort(o.MeshListen) // checked by ParseFlags
	if err != nil {
		return nil, usage.Errorf("--mesh-listen: %v", err)
	}
	secret, err := crypto.ReadSecretFile(o.PeerSecretFile, mesh.MinSecret)
	if err != nil {
		return nil, usage.Errorf("--peer-secret-file: %v", err)
	}
	key, err := mesh.NewKey(secret)
	if err != nil {
		return nil, usage.Errorf("--peer-secret-file: %v", err)
	}
	conn, err := sockopt.ListenUDP(ctx, addr.String(), false)
	if err != nil {
		return nil, fmt.Errorf("--mesh-listen: %w", err)
	}
	if len(o.MeshAllow) == 0 && o.MeshRegistry == "" {
		log.Warn("--mesh-allow and --mesh-registry are empty: mesh messages from any source have their tag checked; list the instances' private ranges, or their addresses through --mesh-registry")
	}
	var advertise netip.AddrPort
	if o.MeshAdvertise != "" {
		if advertise, err = netip.ParseAddrPort(o.MeshAdvertise); err != nil { // checked by ParseFlags
			conn.Close()
			return nil, usage.Errorf("--mesh-advertise: %v", err)
		}
	}
	n, err := mesh.NewNode(mesh.Config{Key: key, Conn: conn, Logger: log, AllowPrefixes: o.MeshAllow, Advertise: advertise,
		Rate: o.MeshRate, Burst: max(o.MeshRate, 1), UnverifiedRate: o.MeshUnverified, Handle: rendezvous.DeliverPunches(out, log)})
	if err != nil {
		conn.Close()
		return nil, err
	}
	if o.MeshRegistry != "" {
		n.SetAllow(nil) // only --mesh-allow until the registry names instances
	}
	if err := n.Register(reg); err != nil {
		conn.Close()
		return nil, fmt.Errorf("mesh metrics: %w", err)
	}
	go n.Heartbeat(ctx)
	go func() {
		defer conn.Close()
		if err := n.Serve(ctx); err != nil {
			log.Error("mesh socket stopped", "err", err)
		}
	}()
	if o.MeshRegistry != "" {
		if err := meshreg.Join(ctx, o.MeshRegistry, "rendezvous", n.Self(), log, meshreg.Apply(n, nil, log)); err != nil {
			return nil, usage.Errorf("--mesh-registry: %v", err)
		}
	}
	log.Info("mesh on", "addr", n.Addr(), "advertised", n.Self())
	return n, nil
}
