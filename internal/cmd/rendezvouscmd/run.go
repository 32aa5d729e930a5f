package rendezvouscmd

import (
	"context"
	"crypto/rand"
	"fmt"
	"github.com/keymesh/keymesh/internal/netcheck"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/obs"
	"github.com/keymesh/keymesh/internal/rendezvous"
	"github.com/keymesh/keymesh/internal/sockopt"

	"github.com/keymesh/keymesh/internal/cmd/usage"
)

// Run loads the key and secrets, opens the registry, the sockets and the
// admin endpoint, prints the connect string to stdout and serves until ctx
// ends.
func Run(ctx context.Context, o Options, stdout io.Writer, log *slog.Logger) error {
	id, created, err := crypto.LoadOrCreateKeyFile(o.KeyFile)
	if err != nil {
		return usage.Errorf("%v", err)
	}
	if created {
		log.Info("created a new server key", "file", o.KeyFile)
	}
	cfg := rendezvous.Config{
		Identity:      id,
		Relays:        o.Relays,
		StreamRelays:  o.StreamRelays,
		TURNURIs:      o.TURNURIs,
		TTL:           o.TTL,
		Refresh:       o.Refresh,
		Instance:      o.Instance,
		Logger:        log,
		RateLimit:     rendezvous.RateLimit{PerSecond: o.RateLimit, Burst: o.RateBurst, Sources: o.RateSources},
		STUNRate:      rendezvous.RateLimit{PerSecond: o.STUNRate, Burst: o.STUNBurst, Sources: o.RateSources},
		KeyMissRate:   rendezvous.RateLimit{PerSecond: o.KeyMissRate, Burst: int(max(1, 2*o.KeyMissRate)), Sources: o.RateSources},
		KeyMissBudget: o.KeyMissBudget,
		RegisterRate:  rendezvous.RateLimit{PerSecond: o.RegisterRate, Burst: o.RegisterBurst, Sources: o.RateSources},
		PunchRate:     rendezvous.RateLimit{PerSecond: o.PunchRate, Burst: o.PunchBurst, Sources: o.RateSources},
		KeyCache:      o.KeyCache,
		ReplayCache:   o.ReplayCache,
		Reports:       rendezvous.ReportLimit{PerSecond: o.ReportRate, Burst: o.ReportBurst},

		StreamRelaySources: o.StreamRelaySources,
		StreamRelayFactor:  o.StreamRelayFactor,
	}
	secret, err := cookieSecret(o.CookieSecretFile, log)
	if err != nil {
		return err
	}
	cfg.Cookies = crypto.NewCookieJar(secret, nil)
	if o.TURNSecretFile != "" {
		if cfg.TURNSecret, err = crypto.ReadSecretFile(o.TURNSecretFile, 16); err != nil {
			return usage.Errorf("--turn-secret-file: %v", err)
		}
	}
	if o.JoinTokenFile != "" {
		if cfg.JoinToken, err = crypto.ReadSecretFile(o.JoinTokenFile, 8); err != nil {
			return usage.Errorf("--join-token-file: %v", err)
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reg, err := openRegistry(ctx, o, log)
	if err != nil {
		return err
	}
	defer reg.Close()
	cfg.Registry = reg
	var snap *snapshotter
	if m, ok := reg.(*discovery.Memory); ok && o.Snapshot != "" {
		snap = newSnapshotter(m, o.Snapshot, discovery.SnapshotKey(id.Seed()), log)
		snap.load()
		go snap.run(ctx, o.SnapshotEvery)
	}

	var admin *obs.Admin
	if o.Admin != "" {
		admin = obs.NewAdmin("rendezvous", log)
		cfg.Registerer = admin.Registry
	}
	// With a shared registry, other instances on this host may join the
	// same address (SO_REUSEPORT), as behind one anycast address.
	conns, err := listen(ctx, o.Listen, o.ReusePort, o.Registry == "redis")
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if o.UDPBuffer > 0 {
		// Room for bursts: at the kernel's default a flood fills the
		// buffer and legitimate datagrams are dropped before any check.
		for _, c := range conns {
			if err := sockopt.SetBuffers(c, o.UDPBuffer, o.UDPBuffer); err != nil {
				log.Warn("rendezvous socket buffer not set", "bytes", o.UDPBuffer, "err", err)
			}
		}
	}
	bound := conns[0].LocalAddr().(*net.UDPAddr).AddrPort()
	var serveAlt func(allow func(netip.Addr) bool)
	if o.AltListen != "" {
		nc, serve, err := openNetcheck(ctx, bound, conns[0], o.AltListen, log)
		if err != nil {
			return err
		}
		cfg.Netcheck, cfg.NetcheckLocal, serveAlt = nc, bound, serve
	}
	var metrics prometheus.Registerer
	if admin != nil {
		metrics = admin.Registry
	}
	node, err := startMesh(ctx, o, conns[0], metrics, log)
	if err != nil {
		return err
	}
	if node != nil {
		cfg.Mesh, cfg.MeshAddr = node, node.Self()
	}
	srv, err := rendezvous.New(cfg)
	if err != nil {
		return usage.Errorf("%v", err)
	}
	if serveAlt != nil {
		// The RFC 5780 sockets share the main socket's STUN budget.
		serveAlt(srv.AllowSTUN)
	}

	fmt.Fprintf(stdout, "rendezvous key: %s\n", id.ID())
	fmt.Fprintf(stdout, "connect string: %s#%s\n", connectHost(o, bound), id.ID())
	if admin != nil {
		// The registry is a readiness check, not a health check: the
		// regions share one Redis (deploy/terraform), so its outage fails
		// every instance at once, and a front door that drained them all
		// would drop the flows that STUN and keepalives still serve, and
		// with them the word that the registry is back. A deployment with
		// one registry per region points its front door at /readyz.
		admin.AddReady("registry", srv.Health)
		addr, err := admin.ListenAndServe(ctx, o.Admin)
		if err != nil {
			return fmt.Errorf("--admin: %w", err)
		}
		fmt.Fprintf(stdout, "admin: http://%s/metrics\n", addr)
	}
	log.Info("rendezvous serving", "listen", bound, "sockets", len(conns), "registry", o.Registry,
		"instance", o.Instance, "version", obs.Version())

	go srv.WatchRegistry(ctx, registryWatch)

	errc := make(chan error, len(conns))
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			if err := srv.Serve(ctx, c); err != nil {
				errc <- err
				cancel()
			}
		})
	}
	wg.Wait()
	if snap != nil {
		snap.save()
	}
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	log.Info("rendezvous stopped")
	return nil
}

func cookieSecret(path string, log *slog.Logger) ([]byte, error) {
	if path != "" {
		s, err := crypto.ReadSecretFile(path, 16)
		if err != nil {
			return nil, usage.Errorf("--cookie-secret-file: %v", err)
		}
		return s, nil
	}
	s := make([]byte, 32)
	if _, err := rand.Read(s); err != nil {
		return nil, fmt.Errorf("cookie secret: %w", err)
	}
	log.Warn("using a random cookie secret: several instances behind one address need a shared --cookie-secret-file")
	return s, nil
}

func openRegistry(ctx context.Context, o Options, log *slog.Logger) (discovery.Registry, error) {
	if o.Registry == "memory" {
		m := discovery.NewMemory(nil)
		m.SetMaxRecords(o.MaxRecords)
		go m.Run(ctx)
		return m, nil
	}
	opts, err := discovery.ParseRedisURL(o.RedisURL)
	if err != nil {
		return nil, usage.Errorf("--redis: %v", err)
	}
	// go-redis logs every failed dial itself, several a second while
	// Redis is down; the server logs the outage once (and its end), so
	// the client's lines go to debug.
	redis.SetLogger(redisLog{log})
	// Let the server's per-call deadlines reach the socket reads and
	// writes, not only the dials.
	opts.ContextTimeoutEnabled = true
	client := redis.NewUniversalClient(opts)
	r, err := discovery.NewRedis(ctx, discovery.RedisOptions{Client: client, MaxRecords: o.MaxRecords})
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("--redis: %w", err)
	}
	log.Info("using the Redis registry")
	return r, nil
}

// registryWatch is how often the registry is checked for the outage and
// recovery log lines.
const registryWatch = time.Second

// listen opens n sockets on addr, with SO_REUSEPORT when n > 1 or shared is
// set (then other processes may bind the same address too).
func listen(ctx context.Context, addr string, n int, shared bool) ([]*net.UDPConn, error) {
	if n == 1 && !shared {
		c, err := sockopt.ListenUDP(ctx, addr, false)
		if err != nil {
			return nil, fmt.Errorf("--listen: %w", err)
		}
		return []*net.UDPConn{c}, nil
	}
	cs, err := sockopt.ListenUDPGroup(ctx, addr, n)
	if err != nil {
		return nil, fmt.Errorf("--listen with --reuseport %d: %w", n, err)
	}
	return cs, nil
}

// connectHost is the host:port peers should use: --public-addr (its port
// defaulting to the bound one), else the listen host, else a local
// non-loopback address.
func connectHost(o Options, bound netip.AddrPort) string {
	port := strconv.Itoa(int(bound.Port()))
	if o.PublicAddr != "" {
		if h, p, err := net.SplitHostPort(o.PublicAddr); err == nil {
			return net.JoinHostPort(h, p)
		}
		return net.JoinHostPort(o.PublicAddr, port)
	}
	if a := bound.Addr(); a.IsValid() && !a.IsUnspecified() {
		return net.JoinHostPort(a.Unmap().String(), port)
	}
	return net.JoinHostPort(localAddr(), port)
}

// localAddr returns the first global unicast IPv4 address of an interface
// that is up, else 127.0.0.1.
func localAddr() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return "127.0.0.1"
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if pn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(pn.IP); ok && ip.Unmap().Is4() && ip.IsGlobalUnicast() {
					return ip.Unmap().String()
				}
			}
		}
	}
	return "127.0.0.1"
}

// redisLog passes go-redis's own log lines to the logger at debug level.
type redisLog struct{ log *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.log.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}

// openNetcheck opens the three more sockets RFC 5780 needs (the primary
// address with the alternate port, the alternate address with the primary
// port, and the alternate address and port); the function it returns
// answers STUN on them, each answer allowed by allow (per source).
func openNetcheck(ctx context.Context, primary netip.AddrPort, primaryConn *net.UDPConn, alt string, log *slog.Logger) (*netcheck.Responder, func(allow func(netip.Addr) bool), error) {
	altAddr, err := netip.ParseAddrPort(alt)
	if err != nil {
		return nil, nil, usage.Errorf("--alt-listen %q: want ip:port, a second address of this host (RFC 5780 needs two)", alt)
	}
	primary = netip.AddrPortFrom(primary.Addr().Unmap(), primary.Port())
	if primary.Addr().IsUnspecified() || altAddr.Addr().IsUnspecified() || primary.Addr() == altAddr.Addr() || altAddr.Port() == 0 || altAddr.Port() == primary.Port() {
		return nil, nil, usage.Errorf("--alt-listen %v with --listen %v: both need specific, different addresses and ports", altAddr, primary)
	}
	conns := map[netip.AddrPort]net.PacketConn{primary: primaryConn}
	for _, a := range []netip.AddrPort{
		netip.AddrPortFrom(primary.Addr(), altAddr.Port()),
		netip.AddrPortFrom(altAddr.Addr(), primary.Port()),
		altAddr,
	} {
		c, err := sockopt.ListenUDP(ctx, a.String(), false)
		if err != nil {
			for a, c := range conns {
				if a != primary {
					c.Close()
				}
			}
			return nil, nil, fmt.Errorf("--alt-listen: %w", err)
		}
		conns[a] = c
	}
	r := netcheck.NewResponder(primary, altAddr, conns)
	serve := func(allow func(netip.Addr) bool) {
		r.LimitPerSource(allow)
		for a, c := range conns {
			if a == primary {
				continue
			}
			go func() {
				if err := r.Serve(ctx, c, a); err != nil {
					log.Warn("netcheck socket stopped", "addr", a, "err", err)
				}
			}()
		}
		log.Info("RFC 5780 behaviour discovery on", "primary", primary, "alternate", altAddr)
	}
	return r, serve, nil
}
