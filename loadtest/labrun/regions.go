package labrun

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/internal/testutil/debpkg"

	"github.com/keymesh/keymesh/internal/testutil/redistest"
)

// The roles of a region's instances (natlab role names).
const (
	RoleRendezvous = "rendezvous"
	RoleRelay      = "relay"
)

// redisPort is the Redis server's port on the lab host "redis".
const redisPort = 6379

// Instance is one server process of a region behind the lab's anycast
// addresses.
type Instance struct {
	// Name is "<region>-<role>", e.g. "r2-relay" (also its host's name).
	Name   string
	Region string
	// Role is RoleRendezvous or RoleRelay.
	Role string
	// Host is its lab host; Host.Addr is its regional address.
	Host *natlab.Host
	// Listen is the address its server binds: the regional address behind
	// the accelerator (which DNATs flows to it), the anycast address under
	// BGP (which it holds).
	Listen netip.Addr
	// Anycast is its role's anycast address.
	Anycast netip.Addr
	// AdminPort is its admin port on the host's 127.0.0.1.
	AdminPort int
	// Args are the flags it runs with (InstanceArgs included).
	Args []string

	mu   sync.Mutex
	proc *Proc
}

// Proc returns the instance's current process (nil before it started).
func (in *Instance) Proc() *Proc {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.proc
}

// HealthEvent is a change of a region's health as the lab's checker saw
// it and told the front door.
type HealthEvent struct {
	Region  string
	Healthy bool
	At      time.Time
}

// startRegions builds the anycast regions (Config.Regions), the Redis
// host, the shared keys and secrets, starts every relay then every
// rendezvous instance, and the health checker.
func (l *Lab) startRegions(ctx context.Context) error {
	stream := !l.cfg.NoStream && hasFlag(ctx, l.cfg.Bins.Relay, "tls-listen")
	relayPorts := []natlab.Port{{Proto: "udp", Num: uint16(l.cfg.RelayPort)}}
	if stream {
		relayPorts = append(relayPorts, natlab.Port{Proto: "tcp", Num: uint16(l.cfg.StreamPort)})
	}
	var regions []string
	for i := 1; i <= l.cfg.Regions; i++ {
		regions = append(regions, "r"+strconv.Itoa(i))
	}
	any, err := l.Net.AddAnycast(ctx, natlab.AnycastConfig{
		Model:   l.cfg.FrontDoor,
		Regions: regions,
		Roles: []natlab.Role{
			{Name: RoleRelay, Ports: relayPorts},
			{Name: RoleRendezvous, Ports: []natlab.Port{{Proto: "udp", Num: uint16(l.cfg.RendezvousPort)}}},
		},
	})
	if err != nil {
		return err
	}
	l.Anycast = any
	if err := l.startRedis(ctx); err != nil {
		return err
	}
	sec, err := l.writeSharedSecrets()
	if err != nil {
		return err
	}
	l.PeerSecretFile = sec.peerSecret
	l.RelayAddr = netip.AddrPortFrom(any.Addr(RoleRelay), uint16(l.cfg.RelayPort))
	if stream {
		ap := netip.AddrPortFrom(any.Addr(RoleRelay), uint16(l.cfg.StreamPort))
		l.StreamURL = fmt.Sprintf("wss://%s/v1/tunnel#%s", ap, sec.relayID)
		l.peerStream = hasFlag(ctx, l.cfg.Bins.Peer, "stream-relay", "up")
	}
	l.Connect = fmt.Sprintf("%s#%s", netip.AddrPortFrom(any.Addr(RoleRendezvous), uint16(l.cfg.RendezvousPort)), sec.rendezvousID)

	for _, r := range any.Regions {
		for _, role := range []string{RoleRelay, RoleRendezvous} {
			h := r.Instance(role)
			in := &Instance{Name: h.Name, Region: r.Name, Role: role, Host: h, Listen: any.ListenAddr(h, role), Anycast: any.Addr(role)}
			if role == RoleRelay {
				in.AdminPort = l.cfg.AdminPort + 1
				in.Args = []string{
					"--listen", netip.AddrPortFrom(in.Listen, uint16(l.cfg.RelayPort)).String(),
					"--admin", "127.0.0.1:" + strconv.Itoa(in.AdminPort),
					"--ticket-key-file", sec.tickets,
				}
				if stream {
					in.Args = append(in.Args, "--tls-listen", netip.AddrPortFrom(in.Listen, uint16(l.cfg.StreamPort)).String(),
						"--key", sec.relayKey, "--stream-presence-ip", h.Addr.String())
				}
				in.Args = append(in.Args, l.cfg.RelayArgs...)
			} else {
				in.AdminPort = l.cfg.AdminPort
				in.Args = []string{
					"--listen", netip.AddrPortFrom(in.Listen, uint16(l.cfg.RendezvousPort)).String(),
					"--key", sec.rendezvousKey,
					"--admin", "127.0.0.1:" + strconv.Itoa(in.AdminPort),
					"--relay", l.RelayAddr.String(),
					"--public-addr", in.Anycast.String(),
					"--instance", in.Name,
					"--registry", "redis",
					"--redis", fmt.Sprintf("redis://%s/0", netip.AddrPortFrom(l.Redis.Addr, redisPort)),
					"--cookie-secret-file", sec.cookie,
				}
				if l.StreamURL != "" {
					in.Args = append(in.Args, "--stream-relay", l.StreamURL)
				}
				in.Args = append(in.Args, l.cfg.RendezvousArgs...)
			}
			l.Instances = append(l.Instances, in)
		}
	}
	if l.cfg.InstanceArgs != nil {
		for _, in := range l.Instances {
			in.Args = append(in.Args, l.cfg.InstanceArgs(in, l)...)
		}
	}
	for _, role := range []string{RoleRelay, RoleRendezvous} {
		for _, in := range l.Instances {
			if in.Role == role {
				if err := l.startInstance(ctx, in); err != nil {
					return err
				}
			}
		}
	}
	hctx, cancel := context.WithCancel(l.ctx)
	done := make(chan struct{})
	l.mu.Lock()
	l.stopHealth = func() { cancel(); <-done }
	l.mu.Unlock()
	go func() {
		defer close(done)
		l.healthLoop(hctx)
	}()
	l.cfg.Logger.Info("labrun: regions up", "model", any.Model, "regions", regions, "connect", l.Connect, "relay", l.RelayAddr)
	return nil
}

// sharedSecrets are the files every instance of a role shares.
type sharedSecrets struct {
	rendezvousKey, rendezvousID string
	relayKey, relayID           string
	tickets, cookie, peerSecret string
}

// writeSharedSecrets makes the identities, ticket keys and secrets every
// instance of a role shares, as a deployment hands them out.
func (l *Lab) writeSharedSecrets() (sharedSecrets, error) {
	dir := filepath.Join(l.Work, "keys")
	s := sharedSecrets{
		rendezvousKey: filepath.Join(dir, "rendezvous.key"),
		relayKey:      filepath.Join(dir, "relay.key"),
		tickets:       filepath.Join(dir, "tickets.keys"),
		cookie:        filepath.Join(dir, "cookie.secret"),
		peerSecret:    filepath.Join(dir, "peer.secret"),
	}
	for _, k := range []struct {
		path string
		id   *string
	}{{s.rendezvousKey, &s.rendezvousID}, {s.relayKey, &s.relayID}} {
		id, err := crypto.GenerateIdentity(nil)
		if err != nil {
			return s, err
		}
		if err := crypto.WriteKeyFile(k.path, id); err != nil {
			return s, fmt.Errorf("labrun: key file: %w", err)
		}
		*k.id = id.ID().String()
	}
	if err := os.WriteFile(s.tickets, []byte(crypto.NewTicketKeyLine(1)), 0o600); err != nil {
		return s, fmt.Errorf("labrun: ticket key file: %w", err)
	}
	for _, p := range []string{s.cookie, s.peerSecret} {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(b)+"\n"), 0o600); err != nil {
			return s, fmt.Errorf("labrun: secret file: %w", err)
		}
	}
	return s, nil
}

// startInstance starts an instance's server and waits until it is ready.
func (l *Lab) startInstance(ctx context.Context, in *Instance) error {
	bin := l.cfg.Bins.Relay
	if in.Role == RoleRendezvous {
		bin = l.cfg.Bins.Rendezvous
	}
	p, err := startProc(in.Host.Command(l.ctx, bin, in.Args...), in.Name, l.logPath(in.Name), nil)
	if err != nil {
		return err
	}
	if err := l.track(p); err != nil {
		return err
	}
	in.mu.Lock()
	in.proc = p
	in.mu.Unlock()
	if err := l.waitReadyIn(ctx, in.Host, p, in.AdminPort); err != nil {
		return err
	}
	l.cfg.Logger.Info("labrun: instance up", "name", in.Name, "listen", in.Listen)
	return nil
}

// startRedis runs redis-server on the lab host "redis" (no persistence),
// reachable from every instance's regional address.
func (l *Lab) startRedis(ctx context.Context) error {
	bin, err := debpkg.Ensure(ctx, "redis-server", "redis-server")
	if err != nil {
		return fmt.Errorf("labrun: the regions share a Redis registry: %w", err)
	}
	h, err := l.Net.AddServer(ctx, "redis")
	if err != nil {
		return err
	}
	l.Redis = h
	l.redisBin = bin
	return l.runRedis(ctx)
}

// runRedis starts redis-server on the lab host "redis" and waits until it
// answers PING.
func (l *Lab) runRedis(ctx context.Context) error {
	h, bin := l.Redis, l.redisBin
	dir := filepath.Join(l.Work, "redis")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	p, err := startProc(h.Command(l.ctx, bin,
		"--port", strconv.Itoa(redisPort), "--bind", h.Addr.String(), "--protected-mode", "no",
		"--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""),
		"redis", l.logPath("redis"), nil)
	if err != nil {
		return err
	}
	if err := l.track(p); err != nil {
		return err
	}
	l.mu.Lock()
	l.redis = p
	l.mu.Unlock()
	deadline := time.Now().Add(l.cfg.StartTimeout)
	for {
		err := redisPing(ctx, h)
		if err == nil {
			return nil
		}
		if !p.Running() {
			return exitedError(p)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("labrun: redis not answering PING within %s: %w", l.cfg.StartTimeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// redisPing sends PING to the lab's Redis from inside its host.
func redisPing(ctx context.Context, h *natlab.Host) error {
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c, err := h.DialTCP(dctx, netip.AddrPortFrom(h.Addr, redisPort))
	if err != nil {
		return err
	}
	defer c.Close()
	return redistest.Ping(c)
}

// healthLoop asks every instance's /healthz each HealthInterval and marks
// a region down at the front door after HealthFailures rounds in which any
// of its instances failed, up again after as many good rounds.
func (l *Lab) healthLoop(ctx context.Context) {
	bad, good := map[string]int{}, map[string]int{}
	t := time.NewTicker(l.cfg.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, r := range l.Anycast.Regions {
			ok := true
			for _, in := range l.Instances {
				if in.Region == r.Name && !l.instanceHealthy(ctx, in) {
					ok = false
				}
			}
			if ok {
				good[r.Name]++
				bad[r.Name] = 0
			} else {
				bad[r.Name]++
				good[r.Name] = 0
			}
			n := good[r.Name]
			if !ok {
				n = bad[r.Name]
			}
			if n < l.cfg.HealthFailures || l.Anycast.Healthy(r.Name) == ok || ctx.Err() != nil {
				continue
			}
			if err := l.Anycast.SetHealthy(ctx, r.Name, ok); err != nil {
				l.cfg.Logger.Warn("labrun: mark region health", "region", r.Name, "healthy", ok, "err", err)
				continue
			}
			l.mu.Lock()
			l.health = append(l.health, HealthEvent{Region: r.Name, Healthy: ok, At: time.Now()})
			l.mu.Unlock()
			l.cfg.Logger.Info("labrun: region health", "region", r.Name, "healthy", ok)
		}
	}
}

// instanceHealthy asks an instance's /healthz.
func (l *Lab) instanceHealthy(ctx context.Context, in *Instance) bool {
	hctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	_, err := getAdmin(hctx, in.Host, in.AdminPort, "/healthz")
	return err == nil
}

// HealthEvents returns the region health changes the lab's checker made.
func (l *Lab) HealthEvents() []HealthEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]HealthEvent(nil), l.health...)
}

// KillRegion kills (SIGKILL, as a region failure would) every instance of
// a region and returns once they are gone. The health checker then marks
// the region down at the front door.
func (l *Lab) KillRegion(region string) error {
	if l.Anycast == nil || l.Anycast.Region(region) == nil {
		return fmt.Errorf("labrun: no region %q", region)
	}
	for _, in := range l.Instances {
		if in.Region == region {
			if p := in.Proc(); p != nil {
				p.Kill()
			}
		}
	}
	l.cfg.Logger.Info("labrun: region killed", "region", region)
	return nil
}

// Home makes region (from 1) the nearest to a site, the others following
// in order, so that its peers' flows go there while it is healthy.
func (l *Lab) Home(ctx context.Context, s *natlab.Site, region int) error {
	if l.Anycast == nil {
		return errors.New("labrun: Home needs a lab with Regions")
	}
	if region < 1 || region > len(l.Anycast.Regions) {
		return fmt.Errorf("labrun: region %d: the lab has %d", region, len(l.Anycast.Regions))
	}
	return l.Anycast.SetNearest(ctx, s.PublicAddr, l.Anycast.Regions[region-1].Name)
}

// ExpandArgs splits a template of flags on white space and fills in, for
// instance in of lab l: {name}, {region}, {n} (its region's number, from
// 1), {role}, {addr} (its regional address), {anycast}, {listen}, {secret}
// (l.PeerSecretFile), {redis} (the shared Redis's URL), {peers} or {peers:PORT}: the regional addresses
// (with :PORT) of the other instances of its role, comma-separated, and
// {peermap:PORT}: every instance of its role as n=addr:PORT,
// comma-separated. For Config.InstanceArgs:
//
//	InstanceArgs: func(in *Instance, l *Lab) []string {
//		return ExpandArgs("--mesh-listen {addr}:7946 --mesh-peers {peers:7946}", in, l)
//	}
func ExpandArgs(tmpl string, in *Instance, l *Lab) []string {
	all, secretFile := l.Instances, l.PeerSecretFile
	fields := strings.Fields(tmpl)
	out := make([]string, 0, len(fields))
	for _, f := range fields {
		var peermap []string
		for _, o := range all {
			if o.Role == in.Role {
				peermap = append(peermap, strings.TrimPrefix(o.Region, "r")+"="+o.Host.Addr.String())
			}
		}
		for {
			i := strings.Index(f, "{peermap:")
			j := strings.Index(f[max(i, 0):], "}")
			if i < 0 || j < 0 {
				break
			}
			spec := f[i : i+j+1]
			port := strings.TrimSuffix(strings.TrimPrefix(spec, "{peermap"), "}")
			f = strings.Replace(f, spec, strings.Join(peermap, port+",")+port, 1)
		}
		f = strings.NewReplacer(
			"{name}", in.Name, "{region}", in.Region, "{n}", strings.TrimPrefix(in.Region, "r"), "{role}", in.Role,
			"{addr}", in.Host.Addr.String(), "{anycast}", in.Anycast.String(),
			"{listen}", in.Listen.String(), "{secret}", secretFile, "{redis}", l.RedisURL(),
		).Replace(f)
		for {
			i := strings.Index(f, "{peers")
			j := strings.Index(f[max(i, 0):], "}")
			if i < 0 || j < 0 {
				break
			}
			spec := f[i : i+j+1]
			port := strings.TrimSuffix(strings.TrimPrefix(spec, "{peers"), "}")
			var peers []string
			for _, o := range all {
				if o != in && o.Role == in.Role {
					if p := strings.TrimPrefix(port, ":"); p != "" && p != port {
						peers = append(peers, netip.AddrPortFrom(o.Host.Addr, parsePort(p)).String())
					} else {
						peers = append(peers, o.Host.Addr.String())
					}
				}
			}
			f = strings.Replace(f, spec, strings.Join(peers, ","), 1)
		}
		out = append(out, f)
	}
	return out
}

// MeshArgs are the InstanceArgs of a mesh between instances (the binaries'
// --mesh-listen, --mesh-peers, --peer-secret-file): each relay is numbered
// by its region and meets the others on its regional address, port 3490;
// each rendezvous listens for the mesh on its regional address, port 3491,
// and finds the others through the shared Redis registry.
func MeshArgs(in *Instance, l *Lab) []string {
	if in.Role == RoleRelay {
		return ExpandArgs("--instance {n} --mesh-listen {addr}:3490 --mesh-peers {peermap:3490} --peer-secret-file {secret}", in, l)
	}
	return ExpandArgs("--mesh-listen {addr}:3491 --peer-secret-file {secret}", in, l)
}

// MeshRegistryArgs are MeshArgs without fixed lists: the instances of each
// role claim their numbers and find each other in the shared Redis
// (--mesh-registry), as auto-scaling groups do.
func MeshRegistryArgs(in *Instance, l *Lab) []string {
	if in.Role == RoleRelay {
		return ExpandArgs("--mesh-listen {addr}:3490 --mesh-registry {redis} --peer-secret-file {secret}", in, l)
	}
	return ExpandArgs("--mesh-listen {addr}:3491 --mesh-registry {redis} --peer-secret-file {secret}", in, l)
}

// RedisURL is the URL of the regions' shared Redis; empty without regions.
func (l *Lab) RedisURL() string {
	if l == nil || l.Redis == nil {
		return ""
	}
	return fmt.Sprintf("redis://%s/0", netip.AddrPortFrom(l.Redis.Addr, redisPort))
}

func parsePort(s string) uint16 {
	n, _ := strconv.ParseUint(s, 10, 16)
	return uint16(n)
}
