package peercmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/keymesh/keymesh/internal/cmd/usage"
	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/flagenv"
	"github.com/keymesh/keymesh/internal/names"
	"github.com/keymesh/keymesh/internal/obs"
	"github.com/keymesh/keymesh/internal/pathsock"
	"github.com/keymesh/keymesh/internal/policy"
	"github.com/keymesh/keymesh/internal/rzclient"
	"github.com/keymesh/keymesh/node"
)

// upOptions is what `peer up` asks of the node.
type upOptions struct {
	Seed     []byte
	Server   string
	Listen   string
	AllowAny bool
	Allow    []string
	NoDirect bool
	// NoReports keeps outcome reports from the rendezvous (--no-reports).
	NoReports bool
	// JoinToken goes in every registration (--join-token-file).
	JoinToken []byte
	// StreamRelay is the TLS stream relay used when UDP is blocked.
	StreamRelay string
	// RendezvousKeepalive is --rendezvous-keepalive (negative: none).
	RendezvousKeepalive time.Duration
	Logger              *slog.Logger
	// RegisterTimeout bounds the wait for the first registration.
	RegisterTimeout time.Duration
	// Userspace runs the userspace TCP/IP stack on the overlay address
	// (--userspace); TUN names the TUN device of TUN mode (--tun).
	Userspace bool
	TUN       string
	// HTTPProxy is the address of the HTTP proxy to peers (--http-proxy).
	HTTPProxy string
	// Pprof serves Go's runtime profiles on the API socket (--pprof).
	Pprof bool
	// Name is this peer's own short name (--name).
	Name string
	// NamesFile holds more names (--names-file).
	NamesFile string
	// DNS is the address of the DNS server (--dns); empty: none.
	DNS string
	// DNSSuffix is the names' suffix (--dns-suffix).
	DNSSuffix string
	// Reflection bounds probes to addresses strangers named (--reflect-*,
	// --probe-reply-*, --max-birthday-sockets, --max-sprays).
	Reflection node.ReflectionLimits
}

var cmdUp = &command{
	name:    "up",
	args:    "--server host:port#<server-id>",
	summary: "run the peer daemon",
	help: `Runs the peer daemon in the foreground: registers with the rendezvous server,
keeps sessions to other peers (direct when hole punching works, else through
the relay), and serves the local API on a Unix socket (mode 0600, in a 0700
directory) for the other commands. SIGINT or SIGTERM stops it cleanly and
removes the socket. A missing key file is created.

Only peers allowed by --allow (repeatable; a comma-separated list in
KEYMESH_ALLOW) or --allow-any may open sessions to this one, and only to
the ports their rules name (default deny). A rule is one of:

  <peer-id>                   every port
  <peer-id>:22,80-89,53/udp   these ports (streams count as tcp; port 0 is
                              that of peer listen and peer pipe)
  web=<peer-id>:80            the same, naming the peer web
  *:80                        any peer, port 80

Names: web.keymesh (--dns-suffix) resolves to the overlay address of the key
that this peer's own configuration names web: its --name (itself), a name=
in --allow, or a line "web <peer-id>" of --names-file; <peer-id>.keymesh
resolves to that peer's address. Nothing from the network adds or changes a
name. The SOCKS5 proxy, peer pipe, peer forward and peer ping take names;
--dns serves them to other programs (AAAA only, on loopback or an overlay
address).

Each refused flow is logged and counted in keymesh_peer_policy_refused_total,
which GET /v1/metrics on the API socket serves (Prometheus text format).

The API socket and the SOCKS5 proxy act with this peer's key, so they serve
only the user running the daemon: connections from other users of this
machine are refused (on a --socks5 address other than loopback, other hosts
are let in).`,
	setup: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		var o upOptions
		var allow, expose flagenv.Strings
		fs.StringVar(&o.Server, "server", "", "rendezvous server: `host:port#server-id` (required; the server prints it)")
		key := fs.String("key", defaultKeyPath(c.getenv), "key file `path` (made if missing)")
		keyEnv := fs.String("key-env", "", "read the key (PEM, as in a key file) from the environment variable `NAME` instead of --key, e.g. one a Kubernetes Secret fills")
		socket := fs.String("socket", defaultSocketPath(c.getenv), "local API socket `path`")
		fs.StringVar(&o.Listen, "listen", ":0", "UDP `address` of the peer's socket")
		fs.Var(&allow, "allow", "let a peer reach ports of this one: `[name=]peer-id[:ports]`, ports as 80,443,8000-8099,53/udp; * for any peer (repeatable)")
		fs.BoolVar(&o.AllowAny, "allow-any", false, "accept sessions from any peer")
		fs.BoolVar(&o.NoDirect, "no-direct", false, "never use direct paths: always the relay")
		fs.BoolVar(&o.NoReports, "no-reports", false, "send the rendezvous no outcome reports (each session's NAT behaviours, direct or relayed, times; no addresses or peer IDs), which feed its traversal metrics")
		joinToken := fs.String("join-token-file", "", "send the join token in this `file` (mode 0600) when registering, for a rendezvous server that requires one")
		fs.StringVar(&o.StreamRelay, "stream-relay", "", "TLS stream relay for networks that block UDP: wss://host:443/v1/tunnel#<relay-id> (as the relay prints it); used when the rendezvous does not answer over UDP at start, or when nothing answers over UDP any more mid-session (back to UDP once the rendezvous answers there again)")
		fs.DurationVar(&o.RendezvousKeepalive, "rendezvous-keepalive", rzclient.DefaultKeepalive, "interval of the small keepalives to the rendezvous between registrations, by which the peer notices within about that time an instance that died or a registry that lost it, and registers again; 0 sends none")
		socks := fs.String("socks5", "", "serve a SOCKS5 proxy to peers on this TCP `address` (e.g. 127.0.0.1:1080)")
		fs.StringVar(&o.HTTPProxy, "http-proxy", "", "serve an HTTP proxy (CONNECT and absolute http:// URLs) to peers on this TCP `address` (e.g. 127.0.0.1:8118)")
		fs.Var(&expose, "expose", "expose local TCP `port` 127.0.0.1:<port> to allowed peers (repeatable; in userspace mode UDP too)")
		fs.BoolVar(&o.Userspace, "userspace", false, "userspace mode: a userspace TCP/IP stack on the overlay address carries IP packets to peers (no TUN, no privileges); the SOCKS5 proxy and exposed ports use it, with UDP")
		fs.StringVar(&o.TUN, "tun", "", "TUN mode: route the overlay prefix through this TUN `device` (made when missing; needs CAP_NET_ADMIN and iproute2's ip)")
		fs.StringVar(&o.Name, "name", "", "this peer's short `name`: <name>.<suffix> resolves to its overlay address here")
		fs.StringVar(&o.NamesFile, "names-file", "", "`file` of names, one \"<name> <peer-id>\" a line (# comments)")
		fs.StringVar(&o.DNS, "dns", "", "serve names over DNS (UDP) on this loopback or overlay `address`, e.g. 127.0.0.1:5353; \"overlay\" with --tun: port 53 of this peer's overlay address on the TUN device (needs CAP_NET_BIND_SERVICE too)")
		fs.StringVar(&o.DNSSuffix, "dns-suffix", names.DefaultSuffix, "DNS `suffix` of names: <name>.<suffix>, <peer-id>.<suffix>")
		fs.DurationVar(&o.RegisterTimeout, "register-timeout", 15*time.Second, "give up when the rendezvous server has not registered this peer within this `duration`")
		reflectionFlags(fs, &o.Reflection)
		fs.BoolVar(&o.Pprof, "pprof", false, "serve Go's runtime profiles (CPU, heap, goroutines, execution trace) at GET /v1/debug/pprof/ on the API socket, to its owner only")
		logFormat := fs.String("log-format", "text", "log `format`: text or json")
		logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
		return func(ctx context.Context, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if err := checkReflection(o.Reflection); err != nil {
				return usage.Errorf("%v", err)
			}
			if o.Server == "" {
				return usage.Errorf("--server is required: host:port#<server-id>, as the rendezvous server prints it")
			}
			if err := checkServer(o.Server); err != nil {
				return err
			}
			rules, err := policy.ParseRules(allow)
			if err != nil {
				return usage.Errorf("--allow: %v", err)
			}
			for _, r := range rules {
				o.Allow = append(o.Allow, r.String())
			}
			if o.Name != "" {
				if err := policy.CheckName(o.Name); err != nil {
					return usage.Errorf("--name: %v", err)
				}
			}
			if o.DNS == dnsOnOverlay && o.TUN == "" {
				return usage.Errorf("--dns overlay: needs --tun (the overlay address is the TUN device's); in userspace mode the SOCKS5 and HTTP proxies resolve names themselves")
			}
			if o.DNS != "" && o.DNS != dnsOnOverlay {
				if ap, err := netip.ParseAddrPort(o.DNS); err != nil || !(ap.Addr().IsLoopback() || crypto.IsOverlay(ap.Addr())) {
					return usage.Errorf("--dns %q: want a loopback or overlay ip:port, e.g. 127.0.0.1:5353", o.DNS)
				}
			}
			if _, err := names.NewTable(o.DNSSuffix, nil); err != nil {
				return usage.Errorf("--dns-suffix: %v", err)
			}
			if o.HTTPProxy != "" {
				if _, _, err := net.SplitHostPort(o.HTTPProxy); err != nil {
					return usage.Errorf("--http-proxy %q: want host:port, e.g. 127.0.0.1:8118", o.HTTPProxy)
				}
			}
			if *socks != "" {
				if _, _, err := net.SplitHostPort(*socks); err != nil {
					return usage.Errorf("--socks5 %q: want host:port, e.g. 127.0.0.1:1080", *socks)
				}
			}
			var ports []uint16
			for _, e := range expose {
				p, err := strconv.ParseUint(e, 10, 16)
				if err != nil || p == 0 {
					return usage.Errorf("--expose %q: want a port 1-65535", e)
				}
				ports = append(ports, uint16(p))
			}
			if *joinToken != "" {
				tok, err := crypto.ReadSecretFile(*joinToken, 8)
				if err != nil {
					return usage.Errorf("--join-token-file: %v", err)
				}
				o.JoinToken = tok
			}
			if o.Userspace && o.TUN != "" {
				return usage.Errorf("--userspace and --tun do not go together: pick one")
			}
			if o.RegisterTimeout <= 0 {
				return usage.Errorf("--register-timeout must be positive")
			}
			if _, err := net.ResolveUDPAddr("udp", o.Listen); err != nil {
				return usage.Errorf("--listen %q: want a UDP host:port, e.g. :0 or 0.0.0.0:41641", o.Listen)
			}
			log, err := obs.NewLogger(c.stderr, *logFormat, *logLevel)
			if err != nil {
				return usage.Errorf("%v", err)
			}
			o.Logger = log
			if *keyEnv != "" {
				pem := c.getenv(*keyEnv)
				if pem == "" {
					return usage.Errorf("--key-env %s: the variable is empty or not set", *keyEnv)
				}
				id, err := crypto.ParseIdentity([]byte(pem))
				if err != nil {
					return usage.Errorf("--key-env %s: %v", *keyEnv, err)
				}
				o.Seed = id.Seed()
			}
			return up(ctx, log, o, *key, *socket, *socks, ports)
		}
	},
}

// checkServer validates a connect string host:port#<server-id>.
func checkServer(s string) error {
	addr, id, ok := strings.Cut(s, "#")
	if !ok || id == "" {
		return usage.Errorf("--server %q: missing #<server-id> (the rendezvous server's key, which it prints at start)", s)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return usage.Errorf("--server %q: %q is not host:port", s, addr)
	}
	if _, err := crypto.ParsePeerID(id); err != nil {
		return usage.Errorf("--server %q: the part after # is not a server ID (52 base32 characters)", s)
	}
	return nil
}

func up(ctx context.Context, log *slog.Logger, o upOptions, keyPath, socket, socksAddr string, expose []uint16) error {
	if len(o.Seed) == 0 { // else --key-env gave it
		id, created, err := crypto.LoadOrCreateKeyFile(keyPath)
		if err != nil {
			return err
		}
		if created {
			log.Info("made a new key file", "path", keyPath)
		}
		o.Seed = id.Seed()
	}
	id, err := crypto.IdentityFromSeed(o.Seed)
	if err != nil {
		return err
	}

	ln, err := daemon.ListenSocket(ctx, socket)
	if err != nil {
		return err
	}
	defer ln.Close() // removes the socket file

	tab, err := nameTable(o, id.ID())
	if err != nil {
		return err
	}

	n, nn, reg, err := startNode(ctx, o)
	if err != nil {
		return err
	}
	defer nn.Close()

	dcfg := daemon.Config{Node: n, Logger: log, Socket: socket, Metrics: reg, Names: tab, Profiles: o.Pprof}
	stopOverlay, err := startOverlay(ctx, log, o, nn, &dcfg)
	if err != nil {
		return err
	}
	defer stopOverlay()
	srv, err := daemon.New(dcfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	for _, p := range expose {
		if _, err := srv.Expose(p, true); err != nil {
			return err
		}
	}
	if socksAddr != "" {
		var lc net.ListenConfig
		sl, err := lc.Listen(ctx, "tcp", socksAddr)
		if err != nil {
			return fmt.Errorf("socks5: %w", err)
		}
		if ta, ok := sl.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
			log.Warn("the SOCKS5 proxy listens beyond loopback: anyone who reaches it can use this peer's sessions", "addr", sl.Addr().String())
		}
		go func() {
			if err := srv.ServeSOCKS(ctx, sl); err != nil {
				log.Error("socks5 proxy stopped", "err", err)
			}
		}()
	}
	if o.HTTPProxy != "" {
		var lc net.ListenConfig
		hl, err := lc.Listen(ctx, "tcp", o.HTTPProxy)
		if err != nil {
			return fmt.Errorf("http proxy: %w", err)
		}
		if ta, ok := hl.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
			log.Warn("the HTTP proxy listens beyond loopback: anyone who reaches it can use this peer's sessions", "addr", hl.Addr().String())
		}
		go func() {
			if err := srv.ServeHTTPProxy(ctx, hl); err != nil {
				log.Error("http proxy stopped", "err", err)
			}
		}()
	}
	if o.DNS != "" {
		addr := o.DNS
		if addr == dnsOnOverlay {
			addr = netip.AddrPortFrom(n.OverlayAddr(), 53).String()
		}
		pc, err := names.ListenDNS(ctx, addr)
		if err != nil {
			return err
		}
		go func() {
			if err := (&names.Server{Table: tab, Logger: log}).Serve(ctx, pc); err != nil {
				log.Error("dns server stopped", "err", err)
			}
		}()
		log.Info("serving names over DNS", "addr", pc.LocalAddr().String(), "suffix", tab.Suffix())
	}
	attrs := []any{"id", n.ID(), "overlay", n.OverlayAddr().String(), "socket", socket, "server", o.Server}
	if o.HTTPProxy != "" {
		attrs = append(attrs, "http_proxy", o.HTTPProxy)
	}
	if socksAddr != "" {
		attrs = append(attrs, "socks5", socksAddr)
	}
	log.Info("peer up", attrs...)
	switch {
	case o.AllowAny:
		log.Info("accepting sessions from any peer (--allow-any)")
	case len(o.Allow) == 0:
		log.Warn("no peer may open a session to this one; add --allow <peer-id> or --allow-any")
	default:
		log.Info("accepting sessions from listed peers", "allow", strings.Join(o.Allow, ","))
	}
	go watchRegistration(ctx, log, n, 10*time.Second)

	err = srv.Serve(ctx, ln)
	log.Info("shutting down")
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// dnsOnOverlay is the --dns value that serves names on port 53 of the
// overlay address, on the TUN device.
const dnsOnOverlay = "overlay"

// nameTable gathers the names this peer's own configuration gives: its
// --name, the name= of --allow rules, the --names-file.
func nameTable(o upOptions, self crypto.PeerID) (*names.Table, error) {
	m := map[string]crypto.PeerID{}
	if o.Name != "" {
		if err := names.Add(m, o.Name, self); err != nil {
			return nil, usage.Errorf("--name: %v", err)
		}
	}
	rules, err := policy.ParseRules(o.Allow)
	if err != nil {
		return nil, usage.Errorf("--allow: %v", err)
	}
	for _, r := range rules {
		if r.Name != "" {
			if err := names.Add(m, r.Name, r.Peer); err != nil {
				return nil, usage.Errorf("--allow: %v", err)
			}
		}
	}
	if o.NamesFile != "" {
		if err := names.ReadFile(o.NamesFile, m); err != nil {
			return nil, usage.Errorf("--names-file: %v", err)
		}
	}
	tab, err := names.NewTable(o.DNSSuffix, m)
	if err != nil {
		return nil, usage.Errorf("%v", err)
	}
	return tab, nil
}

// watchRegistration logs when the node first registers, or warns (with the
// node's reason) when it has not after wait.
func watchRegistration(ctx context.Context, log *slog.Logger, n daemon.Node, wait time.Duration) {
	deadline := time.Now().Add(wait)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := n.Status()
		if st.Registered {
			log.Info("registered with the rendezvous server", "nat_facing", st.Reflexive, "relay", st.Relay)
			return
		}
		if time.Now().After(deadline) {
			log.Warn("not registered with the rendezvous server yet; check --server (host:port, and the server ID after #)", "reason", st.Error)
			return
		}
	}
}

// reflectionFlags declares the flags of the path layer's reflection limits:
// what the peer sends to addresses a stranger named (a Connect's candidates
// with --allow-any, a peer's path update) before they answer.
func reflectionFlags(fs *flag.FlagSet, r *node.ReflectionLimits) {
	fs.IntVar(&r.CandidateProbes, "reflect-candidate-budget", pathsock.DefaultCandidateProbes, "probes to one candidate address a peer named, until it answers, per punch")
	fs.IntVar(&r.PeerProbes, "reflect-peer-budget", pathsock.DefaultPeerProbes, "probes to all unanswered candidate addresses of one peer together, per 30 s")
	fs.Float64Var(&r.Rate, "reflect-rate", pathsock.DefaultUnprovenRate, "probes per second to unanswered candidate addresses, all peers together (the cap on what this peer reflects)")
	fs.Float64Var(&r.Burst, "reflect-burst", pathsock.DefaultUnprovenBurst, "burst of --reflect-rate, in probes")
	fs.Float64Var(&r.DestRate, "reflect-dest-rate", pathsock.DefaultDestRate, "probes per second to one unanswered IPv4 address or IPv6 /64, all peers together")
	fs.Float64Var(&r.DestBurst, "reflect-dest-burst", pathsock.DefaultDestBurst, "burst of --reflect-dest-rate, in probes")
	fs.Float64Var(&r.ReplyRate, "probe-reply-rate", pathsock.DefaultReplyRate, "answers per second to probes from one IPv4 address or IPv6 /64 that is not a proven path")
	fs.Float64Var(&r.ReplyBurst, "probe-reply-burst", pathsock.DefaultReplyBurst, "burst of --probe-reply-rate, in answers")
	fs.IntVar(&r.MaxBirthdaySockets, "max-birthday-sockets", pathsock.DefaultMaxBirthdaySockets, "extra UDP sockets birthday punching (behind a symmetric NAT) holds open at once, all peers together")
	fs.IntVar(&r.MaxSprays, "max-sprays", pathsock.DefaultMaxSprays, "birthday sprays (probes to random ports of a symmetric NAT) running at once")
}

// checkReflection refuses reflection limits below one.
func checkReflection(r node.ReflectionLimits) error {
	for _, v := range []struct {
		name string
		val  float64
	}{
		{"reflect-candidate-budget", float64(r.CandidateProbes)}, {"reflect-peer-budget", float64(r.PeerProbes)},
		{"reflect-rate", r.Rate}, {"reflect-burst", r.Burst}, {"reflect-dest-rate", r.DestRate}, {"reflect-dest-burst", r.DestBurst},
		{"probe-reply-rate", r.ReplyRate}, {"probe-reply-burst", r.ReplyBurst},
		{"max-birthday-sockets", float64(r.MaxBirthdaySockets)}, {"max-sprays", float64(r.MaxSprays)},
	} {
		if v.val < 1 {
			return fmt.Errorf("--%s %v: give 1 or more", v.name, v.val)
		}
	}
	return nil
}
