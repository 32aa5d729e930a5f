package peers

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/rendezvous"
	"github.com/keymesh/keymesh/internal/rzclient"
	"github.com/keymesh/keymesh/internal/sockopt"
)

// peersServer is a rendezvous the peers use.
type peersServer struct {
	addr netip.AddrPort
	key  crypto.PeerID
}

// localServer is one or more rendezvous instances running in this process
// on one SO_REUSEPORT address, sharing a server key, a cookie secret and
// (with Redis) one registry, as separate processes would behind an anycast
// address; each has its own Server (replay and key caches, rate limiter),
// registry client, socket and metrics.
type localServer struct {
	peersServer
	insts  []*localInstance
	cancel context.CancelFunc
	wg     sync.WaitGroup        // the Serve goroutines
	redis  redis.UniversalClient // nil for the memory registry
	prefix string                // Redis key prefix of this run
}

// localInstance is one in-process rendezvous instance.
type localInstance struct {
	name string
	srv  *rendezvous.Server
	reg  discovery.Registry
	prom *prometheus.Registry
	conn *net.UDPConn
}

// startLocal starts o.instances rendezvous instances on one loopback
// address (SO_REUSEPORT when more than one).
func startLocal(ctx context.Context, o peersOpts) (*localServer, error) {
	n := max(1, o.instances)
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	ls := &localServer{prefix: fmt.Sprintf("kmload-%x", secret[:4])}
	ctx, ls.cancel = context.WithCancel(ctx)
	var conns []*net.UDPConn
	if n == 1 {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			ls.cancel()
			return nil, err
		}
		conns = []*net.UDPConn{c}
	} else if conns, err = sockopt.ListenUDPGroup(ctx, "127.0.0.1:0", n); err != nil {
		ls.cancel()
		return nil, err
	}
	for i, c := range conns {
		_ = c.SetReadBuffer(4 << 20)
		in := &localInstance{name: fmt.Sprintf("loadtest-%d", i+1), conn: c, prom: prometheus.NewRegistry()}
		ls.insts = append(ls.insts, in)
		if in.reg, err = ls.openRegistry(ctx, o); err != nil {
			ls.stop()
			return nil, err
		}
		in.srv, err = rendezvous.New(rendezvous.Config{
			Identity:   id,
			Registry:   in.reg,
			Cookies:    crypto.NewCookieJar(secret, nil),
			TTL:        o.ttl,
			Refresh:    o.refresh,
			Instance:   in.name,
			Registerer: in.prom,
			RateLimit:  rendezvous.RateLimit{PerSecond: o.rate},
			// The bench measures how fast Punches go out: its simulated
			// peers connect to a few targets far above a real peer's
			// Punch rate, so that limit is off here.
			PunchRate: rendezvous.RateLimit{PerSecond: -1},
		})
		if err != nil {
			ls.stop()
			return nil, err
		}
	}
	ls.addr = conns[0].LocalAddr().(*net.UDPAddr).AddrPort()
	ls.key = id.ID()
	for _, in := range ls.insts {
		ls.wg.Add(1)
		go func() {
			defer ls.wg.Done()
			_ = in.srv.Serve(ctx, in.conn)
		}()
	}
	return ls, nil
}

// openRegistry opens one instance's registry: a Memory, or its own client
// of the shared Redis (the first one is also kept for INFO and cleanup).
func (ls *localServer) openRegistry(ctx context.Context, o peersOpts) (discovery.Registry, error) {
	if o.registry != "redis" {
		m := discovery.NewMemory(nil)
		go m.Run(ctx)
		return m, nil
	}
	opts, err := discovery.ParseRedisURL(o.redisURL)
	if err != nil {
		return nil, err
	}
	opts.ContextTimeoutEnabled = true
	c := redis.NewUniversalClient(opts)
	// The registry owns the client and closes it.
	reg, err := discovery.NewRedis(ctx, discovery.RedisOptions{Client: c, Prefix: ls.prefix})
	if err != nil {
		c.Close()
		return nil, err
	}
	if ls.redis == nil {
		ls.redis = c
	}
	return reg, nil
}

// halt ends every Serve loop (the servers stay in memory).
func (ls *localServer) halt() {
	ls.cancel()
	ls.wg.Wait()
}

// stop ends Serve, deletes this run's Redis keys and closes everything.
func (ls *localServer) stop() {
	ls.halt()
	if ls.redis != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_ = deleteKeys(ctx, ls.redis, ls.prefix+":*")
		cancel()
		ls.redis = nil
	}
	for _, in := range ls.insts {
		if in.conn != nil {
			in.conn.Close()
		}
		if in.reg != nil {
			in.reg.Close()
		}
	}
	ls.insts = nil
}

// rejected returns the servers' rejected-datagram counters by reason,
// summed over the instances.
func (ls *localServer) rejected() map[string]float64 {
	out := map[string]float64{}
	for _, in := range ls.insts {
		for k, v := range gatherCounter(in.prom, "keymesh_rendezvous_rejected_total", "reason") {
			if v > 0 {
				out[k] += v
			}
		}
	}
	return out
}

// served returns, per instance, the registrations and the connects (found)
// it answered.
func (ls *localServer) served() (names []string, regs, connects []float64) {
	for _, in := range ls.insts {
		names = append(names, in.name)
		regs = append(regs, gatherCounter(in.prom, "keymesh_rendezvous_registrations_total", "")[""])
		connects = append(connects, gatherCounter(in.prom, "keymesh_rendezvous_connects_total", "result")["found"])
	}
	return names, regs, connects
}

// gatherCounter returns the values of counter family name by the value of
// label (or under "" for an unlabelled counter).
func gatherCounter(reg *prometheus.Registry, name, label string) map[string]float64 {
	out := map[string]float64{}
	fams, err := reg.Gather()
	if err != nil {
		return out
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.Metric {
			key := ""
			for _, l := range m.Label {
				if l.GetName() == label {
					key = l.GetValue()
				}
			}
			out[key] += m.GetCounter().GetValue()
		}
	}
	return out
}

// deleteKeys removes the keys matching pattern (on every master of a
// Cluster), so a run leaves nothing behind in a shared Redis.
func deleteKeys(ctx context.Context, c redis.UniversalClient, pattern string) error {
	del := func(ctx context.Context, c redis.Cmdable) error {
		it := c.Scan(ctx, 0, pattern, 1000).Iterator()
		var batch []string
		for it.Next(ctx) {
			batch = append(batch, it.Val())
			if len(batch) == 500 {
				if err := c.Unlink(ctx, batch...).Err(); err != nil {
					return err
				}
				batch = batch[:0]
			}
		}
		if len(batch) > 0 {
			if err := c.Unlink(ctx, batch...).Err(); err != nil {
				return err
			}
		}
		return it.Err()
	}
	if cc, ok := c.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return del(ctx, m) })
	}
	return del(ctx, c)
}

// redisMemory returns Redis's used_memory, or -1.
func (ls *localServer) redisMemory(ctx context.Context) int64 {
	return redisUsedMemory(ctx, ls.redis)
}

// redisUsedMemory returns Redis's used_memory, or -1 (also for a nil
// client).
func redisUsedMemory(ctx context.Context, c redis.UniversalClient) int64 {
	if c == nil {
		return -1
	}
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

// liveHeap returns the live heap after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// emptyServerHeap measures what a local server costs with no peer, by
// starting one and releasing it.
func emptyServerHeap(ctx context.Context, o peersOpts) (uint64, error) {
	before := liveHeap()
	ls, err := startLocal(ctx, o)
	if err != nil {
		return 0, err
	}
	with := liveHeap()
	ls.stop()
	_ = before
	ls = nil
	after := liveHeap()
	if with < after {
		return 0, nil
	}
	return with - after, nil
}

// externalServers parses the --server connect strings.
func externalServers(list []string) ([]peersServer, error) {
	var out []peersServer
	for _, s := range list {
		addr, key, err := rzclient.ParseServer(s)
		if err != nil {
			return nil, fmt.Errorf("--server: %w", err)
		}
		out = append(out, peersServer{addr: addr, key: key})
	}
	return out, nil
}
