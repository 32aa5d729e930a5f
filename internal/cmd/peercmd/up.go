package peercmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/flagenv"
	"github.com/keymesh/keymesh/internal/obs"
	"github.com/keymesh/keymesh/internal/overlay"

	"github.com/keymesh/keymesh/internal/cmd/usage"
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
	Logger      *slog.Logger
	// RegisterTimeout bounds the wait for the first registration.
	RegisterTimeout time.Duration
	// Userspace runs the userspace TCP/IP stack on the overlay address
	// (--userspace); TUN names the TUN device of TUN mode (--tun).
	Userspace bool
	TUN       string
	// HTTPProxy is the address of the HTTP proxy to peers (--http-proxy).
	HTTPProxy string
	// Policy judges the inbound overlay flows (userspace and TUN mode);
	// nil admits every flow of an allowed peer.
	Policy overlay.Policy
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
KEYMESH_ALLOW) or --allow-any may open sessions to this one.

The API socket and the SOCKS5 proxy act with this peer's key, so they serve
only the user running the daemon: connections from other users of this
machine are refused (on a --socks5 address other than loopback, other hosts
are let in).`,
	setup: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		var o upOptions
		var allow, expose flagenv.Strings
		fs.StringVar(&o.Server, "server", "", "rendezvous server: `host:port#server-id` (required; the server prints it)")
		key := fs.String("key", defaultKeyPath(c.getenv), "key file `path` (made if missing)")
		socket := fs.String("socket", defaultSocketPath(c.getenv), "local API socket `path`")
		fs.StringVar(&o.Listen, "listen", ":0", "UDP `address` of the peer's socket")
		fs.Var(&allow, "allow", "accept sessions from this `peer-id` (repeatable)")
		fs.BoolVar(&o.AllowAny, "allow-any", false, "accept sessions from any peer")
		fs.BoolVar(&o.NoDirect, "no-direct", false, "never use direct paths: always the relay")
		fs.BoolVar(&o.NoReports, "no-reports", false, "send the rendezvous no outcome reports (each session's NAT behaviours, direct or relayed, times; no addresses or peer IDs), which feed its traversal metrics")
		joinToken := fs.String("join-token-file", "", "send the join token in this `file` (mode 0600) when registering, for a rendezvous server that requires one")
		fs.StringVar(&o.StreamRelay, "stream-relay", "", "TLS stream relay for networks that block UDP: wss://host:443/v1/tunnel#<relay-id> (as the relay prints it); used when the rendezvous does not answer over UDP")
		socks := fs.String("socks5", "", "serve a SOCKS5 proxy to peers on this TCP `address` (e.g. 127.0.0.1:1080)")
		fs.StringVar(&o.HTTPProxy, "http-proxy", "", "serve an HTTP proxy (CONNECT and absolute http:// URLs) to peers on this TCP `address` (e.g. 127.0.0.1:8118)")
		fs.Var(&expose, "expose", "expose local TCP `port` 127.0.0.1:<port> to allowed peers (repeatable; in userspace mode UDP too)")
		fs.BoolVar(&o.Userspace, "userspace", false, "userspace mode: a userspace TCP/IP stack on the overlay address carries IP packets to peers (no TUN, no privileges); the SOCKS5 proxy and exposed ports use it, with UDP")
		fs.StringVar(&o.TUN, "tun", "", "TUN mode: route the overlay prefix through this TUN `device` (made when missing; needs CAP_NET_ADMIN and iproute2's ip)")
		fs.DurationVar(&o.RegisterTimeout, "register-timeout", 15*time.Second, "give up when the rendezvous server has not registered this peer within this `duration`")
		logFormat := fs.String("log-format", "text", "log `format`: text or json")
		logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
		return func(ctx context.Context, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if o.Server == "" {
				return usage.Errorf("--server is required: host:port#<server-id>, as the rendezvous server prints it")
			}
			if err := checkServer(o.Server); err != nil {
				return err
			}
			for _, a := range allow {
				id, err := crypto.ParsePeerID(a)
				if err != nil {
					return usage.Errorf("--allow %q: not a peer ID (52 base32 characters, as `peer id` prints)", a)
				}
				o.Allow = append(o.Allow, id.String())
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
	id, created, err := crypto.LoadOrCreateKeyFile(keyPath)
	if err != nil {
		return err
	}
	if created {
		log.Info("made a new key file", "path", keyPath)
	}
	o.Seed = id.Seed()

	ln, err := daemon.ListenSocket(ctx, socket)
	if err != nil {
		return err
	}
	defer ln.Close() // removes the socket file

	n, nn, err := startNode(ctx, o)
	if err != nil {
		return err
	}
	defer nn.Close()

	dcfg := daemon.Config{Node: n, Logger: log, Socket: socket}
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
