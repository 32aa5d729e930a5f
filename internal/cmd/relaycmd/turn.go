package relaycmd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/sockopt"
	"github.com/keymesh/keymesh/internal/turnrelay"

	"github.com/keymesh/keymesh/internal/cmd/usage"
)

// startTURN opens the TURN sockets and starts the server, or returns nil
// when TURN is off. The server owns the sockets: Close closes them.
func startTURN(ctx context.Context, o TURNOptions, allow []netip.Prefix, reg prometheus.Registerer, log *slog.Logger, addrs *Addrs) (*turnrelay.Server, error) {
	if !o.enabled() {
		return nil, nil
	}
	secret, err := crypto.ReadSecretFile(o.SecretFile, turnrelay.MinSecretLen)
	if err != nil {
		return nil, usage.Errorf("--turn-secret-file: %v", err)
	}
	cfg := turnrelay.Config{
		Realm:                 o.Realm,
		Secret:                secret,
		RelayIP:               o.RelayIP,
		AdvertiseIP:           o.AdvertiseIP,
		AllowDestinations:     allow,
		MaxAllocationsPerUser: o.Quota,
		MaxAllocations:        o.MaxAllocations,
		MaxTCPConnsPerSource:  o.MaxTCPConnsPerSource,
		MaxTCPConns:           o.MaxTCPConns,
		MaxTCPConnsPerNet:     o.MaxTCPConnsPerNet,
		MaxPeerConns:          o.MaxPeerConns,
		AllocationRate:        o.AllocationRate,
		BindingRate:           o.BindingRate,
		ChallengeRate:         o.ChallengeRate,
		IntegrityRate:         o.IntegrityRate,
		Logger:                log.With("service", "turn"),
		Registerer:            reg,
	}
	closeAll := func() {
		for _, c := range cfg.PacketConns {
			c.Close()
		}
		for _, l := range cfg.Listeners {
			l.Close()
		}
	}
	if o.Listen != "" {
		n := o.Sockets
		if n == 0 {
			n = runtime.NumCPU()
		}
		conns, err := sockopt.ListenUDPGroup(ctx, o.Listen, n)
		if err != nil {
			return nil, fmt.Errorf("turn: %w", err)
		}
		for _, c := range conns {
			cfg.PacketConns = append(cfg.PacketConns, c)
		}
		addrs.TURNUDP = conns[0].LocalAddr()
	}
	if o.TCPListen != "" {
		ln, err := sockopt.ListenTCP(ctx, o.TCPListen, false)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("turn: %w", err)
		}
		cfg.Listeners = []net.Listener{ln}
		addrs.TURNTCP = ln.Addr()
	}
	s, err := turnrelay.New(cfg)
	if err != nil {
		closeAll()
		return nil, usage.Errorf("%v", err)
	}
	return s, nil
}
