package labrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/natlab"

	"github.com/keymesh/keymesh/internal/testutil/bintest"
)

// Config configures a Lab. Bins is required; the rest has defaults.
type Config struct {
	// Bins are the binaries to run (Build or Prebuilt).
	Bins bintest.Binaries
	// Prefix is the natlab namespace prefix; default random.
	Prefix string
	// WorkDir holds keys, sockets and logs; default a new temporary
	// directory, removed by Close unless KeepWork.
	WorkDir  string
	KeepWork bool
	// Logger gets the lab's progress; default discard.
	Logger *slog.Logger
	// RendezvousPort and RelayPort are the servers' UDP ports (default
	// 3478 and 3479); AdminPort is the rendezvous admin port on the server's
	// loopback (default 9090), the relay's is AdminPort+1.
	RendezvousPort, RelayPort, AdminPort int
	// StreamPort is the TCP port of the relay's TLS stream relay (default
	// 443), run when the relay binary has --tls-listen and advertised by
	// the rendezvous (--stream-relay) so that peers without UDP can use
	// it. NoStream turns it off.
	StreamPort int
	NoStream   bool
	// RendezvousArgs and RelayArgs are extra flags for the servers.
	RendezvousArgs, RelayArgs []string
	// PeerLogLevel is the daemons' --log-level; default "debug".
	PeerLogLevel string
	// StartTimeout bounds each server's start; default 20 s.
	StartTimeout time.Duration

	// Regions, when 1 or more, runs the servers as instances in that many
	// regions ("r1", "r2", ...) behind anycast addresses instead of on one
	// server host: a rendezvous and a relay instance per region, sharing
	// keys, secrets and a Redis registry (redis-server on the lab host
	// "redis"). See StartRegions.
	Regions int
	// FrontDoor is the anycast model with Regions (default
	// natlab.Accelerator).
	FrontDoor natlab.FrontDoor
	// InstanceArgs, when set, returns extra flags for one instance; the
	// lab's Instances and PeerSecretFile are set when it is called (for
	// flags naming the other instances, such as a mesh between them). They
	// come last, so they win over the lab's. See ExpandArgs for a template
	// form.
	InstanceArgs func(in *Instance, l *Lab) []string
	// HealthInterval is how often the lab's health checker asks each
	// instance's /healthz with Regions (default 200 ms); a region is marked
	// down after HealthFailures failed rounds (default 2) and up again
	// after as many good ones.
	HealthInterval time.Duration
	HealthFailures int

	// External, when set, runs no servers: the peers use servers outside
	// the lab, reached through an uplink from the lab's internet to the
	// host (natlab.Lab.AddUplink). Regions must be 0.
	External *External
}

// External names servers outside the lab (Config.External).
type External struct {
	// Connect is the rendezvous connect string with an IP address
	// (ip:port#server-id): the lab's hosts resolve no names.
	Connect string
	// StreamURL, when set, is given to every peer as --stream-relay (a
	// peer without UDP needs it before it can register).
	StreamURL string
	// Routes are the prefixes the lab sends up to the host: the
	// rendezvous's and the relays' addresses (default: the rendezvous's
	// address alone).
	Routes []netip.Prefix
	// Forward turns IPv4 forwarding on in the host while the lab lives,
	// for servers beyond this host (natlab.UplinkConfig.Forward).
	Forward bool
}

func (c *Config) defaults() error {
	if c.Bins.Peer == "" || c.Bins.Rendezvous == "" || c.Bins.Relay == "" {
		return errors.New("labrun: Config.Bins is required (bintest.Build or bintest.Prebuilt)")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.RendezvousPort == 0 {
		c.RendezvousPort = 3478
	}
	if c.RelayPort == 0 {
		c.RelayPort = 3479
	}
	if c.AdminPort == 0 {
		c.AdminPort = 9090
	}
	if c.StreamPort == 0 {
		c.StreamPort = 443
	}
	if c.PeerLogLevel == "" {
		c.PeerLogLevel = "debug"
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 20 * time.Second
	}
	if c.Regions < 0 {
		return fmt.Errorf("labrun: Config.Regions %d: want 0 (one server host) or more", c.Regions)
	}
	if c.External != nil && c.Regions > 0 {
		return errors.New("labrun: Config.External and Config.Regions exclude each other")
	}
	if c.FrontDoor == "" {
		c.FrontDoor = natlab.Accelerator
	}
	if c.HealthInterval <= 0 {
		c.HealthInterval = 200 * time.Millisecond
	}
	if c.HealthFailures <= 0 {
		c.HealthFailures = 2
	}
	return nil
}

// Lab is a natlab lab with the keymesh servers running on a server host.
type Lab struct {
	// Net is the underlying netns lab.
	Net *natlab.Lab
	// Server is the host running the rendezvous and the relay (nil with
	// Regions: see Instances).
	Server *natlab.Host
	// Anycast, Instances and Redis are set with Regions: the regions behind
	// their anycast addresses, every server instance (region by region,
	// relay then rendezvous) and the Redis host.
	Anycast   *natlab.Anycast
	Instances []*Instance
	Redis     *natlab.Host
	// Connect is the rendezvous connect string, host:port#server-id.
	Connect string
	// RelayAddr is the relay's UDP address.
	RelayAddr netip.AddrPort
	// StreamURL is the stream relay's address for peers
	// (wss://host:port/v1/tunnel#relay-id); empty when not running.
	StreamURL string
	// Work is the work directory (keys, sockets, logs).
	Work string
	// PeerSecretFile is the secret shared by the instances for a mesh
	// between them (with Regions; for InstanceArgs, e.g.
	// --peer-secret-file).
	PeerSecretFile string

	cfg Config
	ctx context.Context // the lab's life: servers run under it

	mu        sync.Mutex
	closed    bool
	procs     []*Proc
	relay     *Proc
	relayArgs []string
	redis     *Proc  // the Redis server, with Regions
	redisBin  string // its binary
	// peerStream is whether `peer up` takes --stream-relay (then every
	// daemon gets the lab's StreamURL, which a peer without UDP needs
	// before it can register).
	peerStream bool
	seq        int
	// stopHealth ends the health checker (with Regions); health is what
	// it did.
	stopHealth func()
	health     []HealthEvent
}

// Start builds a lab (natlab.New), adds the server host "server" and
// starts the rendezvous (on the server's first address) and the relay (same
// host, RelayPort), the rendezvous advertising the relay. The servers live
// until Close or until ctx ends. On error everything is cleaned up.
func Start(ctx context.Context, cfg Config) (*Lab, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	work := cfg.WorkDir
	if work == "" {
		d, err := os.MkdirTemp("", "labrun-")
		if err != nil {
			return nil, fmt.Errorf("labrun: work dir: %w", err)
		}
		work = d
	}
	for _, d := range []string{"logs", "keys", "s"} {
		if err := os.MkdirAll(filepath.Join(work, d), 0o700); err != nil {
			return nil, fmt.Errorf("labrun: work dir: %w", err)
		}
	}
	l := &Lab{Work: work, cfg: cfg, ctx: ctx}
	if err := l.start(ctx); err != nil {
		l.DumpLogs(os.Stderr, 40)
		return nil, errors.Join(err, l.Close())
	}
	return l, nil
}

func (l *Lab) start(ctx context.Context) error {
	net, err := natlab.New(ctx, natlab.Config{Prefix: l.cfg.Prefix, Logger: l.cfg.Logger})
	if err != nil {
		return err
	}
	l.Net = net
	if l.cfg.Regions > 0 {
		return l.startRegions(ctx)
	}
	if l.cfg.External != nil {
		return l.startExternal(ctx)
	}
	srv, err := net.AddServer(ctx, "server")
	if err != nil {
		return err
	}
	l.Server = srv
	l.RelayAddr = netip.AddrPortFrom(srv.Addr, uint16(l.cfg.RelayPort))
	if err := l.startRelay(ctx); err != nil {
		return err
	}
	return l.startRendezvous(ctx)
}

// logPath returns a new log file path for a process named name.
func (l *Lab) logPath(name string) string {
	l.mu.Lock()
	l.seq++
	n := l.seq
	l.mu.Unlock()
	clean := strings.Map(func(r rune) rune {
		if r == ' ' || r == '/' || r == '#' {
			return '_'
		}
		return r
	}, name)
	return filepath.Join(l.Work, "logs", fmt.Sprintf("%03d-%s.log", n, clean))
}

// track records a process for Close and DumpLogs.
func (l *Lab) track(p *Proc) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		go p.Kill()
		return ErrClosed
	}
	l.procs = append(l.procs, p)
	return nil
}

func (l *Lab) startRendezvous(ctx context.Context) error {
	addr := netip.AddrPortFrom(l.Server.Addr, uint16(l.cfg.RendezvousPort))
	args := []string{
		"--listen", addr.String(),
		"--key", filepath.Join(l.Work, "keys", "rendezvous.key"),
		"--admin", "127.0.0.1:" + strconv.Itoa(l.cfg.AdminPort),
		"--relay", l.RelayAddr.String(),
		"--public-addr", l.Server.Addr.String(),
		"--instance", "lab",
	}
	if l.StreamURL != "" {
		args = append(args, "--stream-relay", l.StreamURL)
		l.peerStream = hasFlag(ctx, l.cfg.Bins.Peer, "stream-relay", "up")
	}
	if !slices.Contains(l.cfg.RendezvousArgs, "--registry") && hasFlag(ctx, l.cfg.Bins.Rendezvous, "registry-snapshot") {
		// The memory registry survives a restart (RestartRendezvous),
		// as a deployment's would with the same flag.
		args = append(args, "--registry-snapshot", filepath.Join(l.Work, "rendezvous.snap"))
	}
	args = append(args, l.cfg.RendezvousArgs...)
	connect := make(chan string, 1)
	cmd := l.Server.Command(l.ctx, l.cfg.Bins.Rendezvous, args...)
	p, err := startProc(cmd, "rendezvous", l.logPath("rendezvous"), func(log io.Writer) io.Writer {
		return &lineWriter{w: log, fn: func(line string) {
			if s, ok := strings.CutPrefix(line, "connect string: "); ok {
				select {
				case connect <- strings.TrimSpace(s):
				default:
				}
			}
		}}
	})
	if err != nil {
		return err
	}
	if err := l.track(p); err != nil {
		return err
	}
	timer := time.NewTimer(l.cfg.StartTimeout)
	defer timer.Stop()
	select {
	case s := <-connect:
		l.Connect = s
	case <-p.Done():
		return exitedError(p)
	case <-timer.C:
		return fmt.Errorf("labrun: the rendezvous printed no connect string within %s\n%s", l.cfg.StartTimeout, indent(p.Tail(30)))
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := l.waitReady(ctx, p, l.cfg.AdminPort); err != nil {
		return err
	}
	l.cfg.Logger.Info("labrun: rendezvous up", "connect", l.Connect)
	return nil
}

func (l *Lab) startRelay(ctx context.Context) error {
	keyFile := filepath.Join(l.Work, "keys", "tickets.keys")
	if err := os.WriteFile(keyFile, []byte(crypto.NewTicketKeyLine(1)), 0o600); err != nil {
		return fmt.Errorf("labrun: ticket key file: %w", err)
	}
	args := []string{
		"--listen", l.RelayAddr.String(),
		"--admin", "127.0.0.1:" + strconv.Itoa(l.cfg.AdminPort+1),
		"--ticket-key-file", keyFile,
	}
	if !l.cfg.NoStream && hasFlag(ctx, l.cfg.Bins.Relay, "tls-listen") {
		// The relay's identity, made here so that the pinned URL is
		// known before the relay starts.
		id, err := crypto.GenerateIdentity(nil)
		if err != nil {
			return err
		}
		idFile := filepath.Join(l.Work, "keys", "relay.key")
		if err := crypto.WriteKeyFile(idFile, id); err != nil {
			return fmt.Errorf("labrun: relay key: %w", err)
		}
		ap := netip.AddrPortFrom(l.Server.Addr, uint16(l.cfg.StreamPort))
		args = append(args, "--tls-listen", ap.String(), "--key", idFile)
		if hasFlag(ctx, l.cfg.Bins.Relay, "stream-own-ports") {
			// The rendezvous shares the relay's address: tunnels may
			// reach its port there.
			args = append(args, "--stream-own-ports", strconv.Itoa(l.cfg.RendezvousPort))
		}
		l.StreamURL = fmt.Sprintf("wss://%s/v1/tunnel#%s", ap, id.ID())
	}
	l.relayArgs = append(args, l.cfg.RelayArgs...)
	return l.runRelay(ctx)
}

func (l *Lab) runRelay(ctx context.Context) error {
	cmd := l.Server.Command(l.ctx, l.cfg.Bins.Relay, l.relayArgs...)
	p, err := startProc(cmd, "relay", l.logPath("relay"), nil)
	if err != nil {
		return err
	}
	if err := l.track(p); err != nil {
		return err
	}
	l.mu.Lock()
	l.relay = p
	l.mu.Unlock()
	if err := l.waitReady(ctx, p, l.cfg.AdminPort+1); err != nil {
		return err
	}
	l.cfg.Logger.Info("labrun: relay up", "addr", l.RelayAddr)
	return nil
}

// RestartRelay stops the relay (SIGKILL when kill is true, as a crash
// would; else SIGTERM), waits down for the given time, and starts it again
// with the same flags and the same ticket key file, so tickets issued before
// stay valid.
func (l *Lab) RestartRelay(ctx context.Context, kill bool, down time.Duration) error {
	if l.Anycast != nil {
		return errors.New("labrun: RestartRelay is for the one-server lab; with regions use KillRegion")
	}
	l.mu.Lock()
	p := l.relay
	l.mu.Unlock()
	if p != nil {
		if kill {
			p.Kill()
		} else {
			p.Stop()
		}
	}
	l.cfg.Logger.Info("labrun: relay stopped", "kill", kill)
	select {
	case <-time.After(down):
	case <-ctx.Done():
		return ctx.Err()
	}
	return l.runRelay(ctx)
}

// waitReady polls a server's admin /readyz inside the server's namespace
// until it answers 200.
func (l *Lab) waitReady(ctx context.Context, p *Proc, port int) error {
	return l.waitReadyIn(ctx, l.Server, p, port)
}

// waitReadyIn is waitReady for a server in host h.
func (l *Lab) waitReadyIn(ctx context.Context, h *natlab.Host, p *Proc, port int) error {
	hc := hostHTTP(h)
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", port)
	deadline := time.Now().Add(l.cfg.StartTimeout)
	var last error
	for time.Now().Before(deadline) {
		if !p.Running() {
			return exitedError(p)
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				cancel()
				return nil
			}
			err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		cancel()
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("labrun: %s not ready within %s (%s: %v)\n%s", p.Name, l.cfg.StartTimeout, url, last, indent(p.Tail(30)))
}

// ServerHTTP returns an HTTP client whose connections are made inside the
// server host's namespace (for the servers' admin endpoints on 127.0.0.1).
func (l *Lab) ServerHTTP() *http.Client { return hostHTTP(l.Server) }

// hostHTTP returns an HTTP client whose connections are made inside host
// h's namespace.
func hostHTTP(h *natlab.Host) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, err
			}
			return h.DialTCP(ctx, ap)
		},
	}}
}

// Metrics returns the text of a server's /metrics ("rendezvous" or
// "relay").
// With regions, it is the text of every instance of that role, one after
// the other (so MetricSum adds up the instances).
func (l *Lab) Metrics(ctx context.Context, server string) (string, error) {
	port := l.cfg.AdminPort
	if server == "relay" {
		port++
	}
	if l.Server == nil && l.Anycast == nil {
		return "", ErrExternal
	}
	if l.Anycast != nil {
		var b strings.Builder
		for _, in := range l.Instances {
			if in.Role != server {
				continue
			}
			text, err := metricsOf(ctx, in.Host, port)
			if err != nil {
				return "", fmt.Errorf("%s: %w", in.Name, err)
			}
			b.WriteString(text)
		}
		return b.String(), nil
	}
	return metricsOf(ctx, l.Server, port)
}

// getAdmin GETs path from the admin server on port in h and returns the
// body; a status other than 200 is an error.
func getAdmin(ctx context.Context, h *natlab.Host, port int, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
	if err != nil {
		return nil, err
	}
	resp, err := hostHTTP(h).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return b, err
}

// metricsOf returns the /metrics text of the admin server on port in h.
func metricsOf(ctx context.Context, h *natlab.Host, port int) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/metrics", port), nil)
	if err != nil {
		return "", err
	}
	resp, err := hostHTTP(h).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// AddSite adds a site of type t and verifies that its NAT behaves as the
// type says (natlab.Lab.Verify).
func (l *Lab) AddSite(ctx context.Context, name string, t natlab.NATType) (*natlab.Site, error) {
	s, err := l.Net.AddSite(ctx, name, t)
	if err != nil {
		return nil, err
	}
	if err := l.Net.Verify(ctx, s); err != nil {
		return nil, err
	}
	return s, nil
}

// Procs returns the processes started so far.
func (l *Lab) Procs() []*Proc {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Proc(nil), l.procs...)
}

// DumpLogs writes the last n lines of every process's log to w (the
// servers first, then peers and commands in start order).
func (l *Lab) DumpLogs(w io.Writer, n int) {
	for _, p := range l.Procs() {
		state := "running"
		if !p.Running() {
			state = exitText(p.Err())
		}
		fmt.Fprintf(w, "=== %s (%s) %s\n%s\n", p.Name, state, p.LogPath, p.Tail(n))
	}
}

// Close stops every process (SIGTERM, then SIGKILL), removes the lab's
// namespaces and, unless KeepWork, the work directory. It is idempotent.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := l.procs
	stopHealth := l.stopHealth
	l.mu.Unlock()
	if stopHealth != nil {
		stopHealth()
	}
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Stop()
		}()
	}
	wg.Wait()
	var errs []error
	if l.Net != nil {
		errs = append(errs, l.Net.Close())
	}
	if !l.cfg.KeepWork && l.cfg.WorkDir == "" {
		errs = append(errs, os.RemoveAll(l.Work))
	}
	return errors.Join(errs...)
}

// MetricSum returns the sum of every series of a metric in a server's
// /metrics ("rendezvous" or "relay"), 0 when it has none.
func (l *Lab) MetricSum(ctx context.Context, server, name string) (float64, error) {
	text, err := l.Metrics(ctx, server)
	if err != nil {
		return 0, err
	}
	return sumMetric(text, name), nil
}

// sumMetric adds up the samples of metric name in Prometheus text format.
func sumMetric(text, name string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // another metric whose name starts alike
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// hasFlag reports whether a binary's help (`bin [sub...] --help`) lists
// --name.
func hasFlag(ctx context.Context, bin, name string, sub ...string) bool {
	cmd := exec.CommandContext(ctx, bin, append(sub, "--help")...)
	cmd.WaitDelay = time.Second
	out, _ := cmd.CombinedOutput()
	for _, f := range strings.Fields(string(out)) {
		if f == "--"+name || strings.HasPrefix(f, "--"+name+"=") {
			return true
		}
	}
	return false
}
