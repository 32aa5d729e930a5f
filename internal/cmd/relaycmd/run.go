package relaycmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/keymesh/keymesh/internal/obs"
	"github.com/keymesh/keymesh/internal/relay"
	"github.com/keymesh/keymesh/internal/sockopt"

	"github.com/keymesh/keymesh/internal/cmd/usage"
)

// Run runs the relay until ctx ends (then it returns nil) or a service
// fails. Errors in the options come back as usage errors, so that Main
// exits 2. stdout is for what the command prints for a person; the relay
// prints nothing there today (the rendezvous prints its connect string).
func Run(ctx context.Context, o Options, stdout io.Writer, log *slog.Logger) error {
	if log == nil {
		log = obs.Discard()
	}
	keys, err := loadKeys(o.Ticket, log)
	if err != nil {
		return err
	}
	admin := obs.NewAdmin("relay", log)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	conns, err := listenUDP(ctx, o.Listen, o.ReusePort)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	rl := o.RateLimit
	rl.StreamRelays = append(append([]netip.Prefix(nil), rl.StreamRelays...), o.Stream.presenceSources()...)
	cfg := relay.Config{
		Keys:       keys,
		TicketTTL:  o.Ticket.TTL,
		RateLimit:  rl,
		Logger:     log,
		Registerer: admin.Registry,
		Instance:   uint16(o.Mesh.Instance),
	}
	node, peers, err := startMesh(ctx, o.Mesh, conns[0], len(conns), admin.Registry, log)
	if err != nil {
		return err
	}
	if node != nil {
		cfg.Mesh, cfg.Members = node, peers
	}
	srv, err := relay.New(cfg)
	if err != nil {
		return usage.Errorf("%v", err)
	}
	addrs := Addrs{UDP: conns[0].LocalAddr()}
	if o.UDPBuffer > 0 {
		for _, c := range conns {
			if err := errors.Join(c.SetReadBuffer(o.UDPBuffer), c.SetWriteBuffer(o.UDPBuffer)); err != nil {
				log.Warn("relay socket buffer not set", "bytes", o.UDPBuffer, "err", err)
			}
		}
	}

	turn, err := startTURN(ctx, o.TURN, o.AllowDestinations, admin.Registry, log, &addrs)
	if err != nil {
		return err
	}
	if turn != nil {
		defer turn.Close()
	}
	streamURL, err := startStream(ctx, o.Stream, o.AllowDestinations, admin.Registry, log, &addrs)
	if err != nil {
		return err
	}
	addrs.StreamURL = streamURL

	admin.AddHealth("ticket-relay", srv.Healthy)
	if o.Admin != "" {
		a, err := admin.ListenAndServe(ctx, o.Admin)
		if err != nil {
			return err
		}
		addrs.Admin = a
	}

	errc := make(chan error, len(conns))
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			if err := srv.Serve(ctx, c); err != nil {
				errc <- err
			}
		})
	}
	log.Info("relay ready", "udp", addrs.UDP.String(), "sockets", len(conns), "admin", str(addrs.Admin),
		"turn_udp", str(addrs.TURNUDP), "turn_tcp", str(addrs.TURNTCP), "stream", streamURL, "ticket_ttl", o.Ticket.TTL.String(),
		"version", obs.Version())
	if o.Ready != nil {
		o.Ready(addrs)
	}

	select {
	case <-ctx.Done():
		err = nil
	case err = <-errc:
		log.Error("relay socket failed", "err", err)
	}
	cancel()
	wg.Wait()
	log.Info("relay stopped")
	return err
}

// listenUDP opens n sockets on addr, always with SO_REUSEPORT: the kernel
// spreads flows over them, and since the relay is stateless other relay
// processes on this host may join the same address.
func listenUDP(ctx context.Context, addr string, n int) ([]*net.UDPConn, error) {
	if n <= 1 {
		c, err := sockopt.ListenUDP(ctx, addr, true)
		if err != nil {
			return nil, fmt.Errorf("ticket relay: %w", err)
		}
		return []*net.UDPConn{c}, nil
	}
	conns, err := sockopt.ListenUDPGroup(ctx, addr, n)
	if err != nil {
		return nil, fmt.Errorf("ticket relay: %w", err)
	}
	return conns, nil
}

func str(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
