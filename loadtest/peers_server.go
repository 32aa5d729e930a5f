package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/rendezvous"
	"github.com/keymesh/keymesh/internal/rzclient"
)

// peersServer is a rendezvous the peers use.
type peersServer struct {
	addr netip.AddrPort
	key  crypto.PeerID
}

// localServer is a rendezvous running in this process.
type localServer struct {
	peersServer
	srv    *rendezvous.Server
	reg    discovery.Registry
	prom   *prometheus.Registry
	conn   *net.UDPConn
	cancel context.CancelFunc
	done   chan error
	redis  redis.UniversalClient // nil for the memory registry
}

// startLocal starts a rendezvous on a loopback socket.
func startLocal(ctx context.Context, o peersOpts) (*localServer, error) {
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	ls := &localServer{prom: prometheus.NewRegistry(), done: make(chan error, 1)}
	ctx, ls.cancel = context.WithCancel(ctx)
	if o.registry == "redis" {
		opts, err := discovery.ParseRedisURL(o.redisURL)
		if err != nil {
			ls.cancel()
			return nil, err
		}
		ls.redis = redis.NewUniversalClient(opts)
		// The registry owns the client and closes it; ls.redis is only
		// read for INFO.
		if ls.reg, err = discovery.NewRedis(ctx, discovery.RedisOptions{Client: ls.redis, Prefix: "kmload"}); err != nil {
			ls.redis.Close()
			ls.cancel()
			return nil, err
		}
	} else {
		m := discovery.NewMemory(nil)
		go m.Run(ctx)
		ls.reg = m
	}
	ls.srv, err = rendezvous.New(rendezvous.Config{
		Identity:   id,
		Registry:   ls.reg,
		Cookies:    crypto.NewCookieJar(secret, nil),
		TTL:        o.ttl,
		Refresh:    o.refresh,
		Instance:   "loadtest",
		Registerer: ls.prom,
		RateLimit:  rendezvous.RateLimit{PerSecond: o.rate},
	})
	if err != nil {
		ls.stop()
		return nil, err
	}
	ls.conn, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		ls.stop()
		return nil, err
	}
	_ = ls.conn.SetReadBuffer(4 << 20)
	ls.addr = ls.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	ls.key = id.ID()
	go func() { ls.done <- ls.srv.Serve(ctx, ls.conn) }()
	return ls, nil
}

// stop ends Serve and closes everything.
func (ls *localServer) stop() {
	ls.cancel()
	if ls.conn != nil {
		<-ls.done
		ls.conn.Close()
	}
	if ls.reg != nil {
		ls.reg.Close()
	}
}

// rejected returns the server's rejected-datagram counters by reason.
func (ls *localServer) rejected() map[string]float64 {
	out := map[string]float64{}
	fams, err := ls.prom.Gather()
	if err != nil {
		return out
	}
	for _, f := range fams {
		if f.GetName() != "keymesh_rendezvous_rejected_total" {
			continue
		}
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetName() == "reason" && m.Counter.GetValue() > 0 {
					out[l.GetValue()] = m.Counter.GetValue()
				}
			}
		}
	}
	return out
}

// redisMemory returns Redis's used_memory, or -1.
func (ls *localServer) redisMemory(ctx context.Context) int64 {
	if ls.redis == nil {
		return -1
	}
	info, err := ls.redis.Info(ctx, "memory").Result()
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
