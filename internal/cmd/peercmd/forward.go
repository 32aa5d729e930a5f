package peercmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"

	"github.com/keymesh/keymesh/internal/daemon"

	"github.com/keymesh/keymesh/internal/cmd/usage"
)

var cmdForward = &command{
	name:    "forward",
	args:    "<local-port> <peer>:<port>",
	summary: "forward a local TCP (or UDP) port to a peer's port",
	help: `Listens on 127.0.0.1:<local-port> (see --bind) and connects each TCP
connection to a stream to <port> of <peer>, where "peer expose <port>" makes a
local service reachable. <peer> is a peer ID or an overlay address in
brackets: [fd4b::1]:8080. <local-port> 0 picks a free port. Prints the
address it listens on, then runs until interrupted. Connections from other
users of this machine are refused (they would act with this peer's key);
with a --bind other than loopback, other hosts are let in.

With --udp it forwards a local UDP port instead: each local source gets its
own flow to <peer>'s <port> through the daemon's userspace stack (the daemon
must run with --userspace; the peer with --userspace and "peer expose
<port>", or in TUN mode). A UDP forward cannot tell other local users apart:
keep it on loopback of a single-user machine.`,
	setup: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		cl := c.socketFlag(fs)
		bind := fs.String("bind", "127.0.0.1", "local `address` to listen on")
		udp := fs.Bool("udp", false, "forward UDP instead of TCP (the daemon in userspace mode)")
		return func(ctx context.Context, args []string) error {
			if err := wantArgs(args, "<local-port>", "<peer>:<port>"); err != nil {
				return err
			}
			lport, err := strconv.ParseUint(args[0], 10, 16)
			if err != nil {
				return usage.Errorf("local port %q: want 0-65535", args[0])
			}
			peer, port, err := parsePeerPort(args[1])
			if err != nil {
				return err
			}
			var lc net.ListenConfig
			if *udp {
				pc, err := lc.ListenPacket(ctx, "udp", net.JoinHostPort(*bind, strconv.Itoa(int(lport))))
				if err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "forwarding UDP %s -> %s port %d\n", pc.LocalAddr(), peer, port)
				return daemon.ForwardUDP(ctx, pc, func(ctx context.Context) (net.Conn, error) {
					s, err := cl.DialUDP(ctx, peer, port)
					if err != nil {
						fmt.Fprintf(c.stderr, "peer forward --udp: %s port %d: %s\n", shortPeer(peer), port, oneLine(err))
					}
					return s, err
				})
			}
			ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(*bind, strconv.Itoa(int(lport))))
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "forwarding %s -> %s port %d\n", ln.Addr(), peer, port)
			log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			return c.forward(ctx, cl, daemon.OwnerOnly(ln, log), peer, port)
		}
	},
}

// parsePeerPort splits "<peer>:<port>" (an overlay address in brackets).
func parsePeerPort(s string) (string, uint16, error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, usage.Errorf("%q: want <peer>:<port>, e.g. <peer-id>:8080 or [fd4b::1]:8080", s)
	}
	peer, err := peerArg(host)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 {
		return "", 0, usage.Errorf("port %q in %q: want 1-65535", ps, s)
	}
	return peer, uint16(port), nil
}

func (c *cli) forward(ctx context.Context, cl *daemon.Client, ln net.Listener, peer string, port uint16) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	for {
		tc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Go(func() {
			s, err := cl.Dial(ctx, peer, port)
			if err != nil {
				fmt.Fprintf(c.stderr, "peer forward: %s -> %s port %d: %s\n", tc.RemoteAddr(), shortPeer(peer), port, oneLine(err))
				tc.Close()
				return
			}
			mu.Lock()
			conns[tc], conns[s] = struct{}{}, struct{}{}
			mu.Unlock()
			_ = daemon.Splice(tc, s)
			mu.Lock()
			delete(conns, tc)
			delete(conns, s)
			mu.Unlock()
		})
	}
}

var cmdExpose = &command{
	name:    "expose",
	args:    "<port>",
	summary: "make a local TCP (and in userspace mode UDP) port reachable by allowed peers",
	help: `Streams that allowed peers open to <port> are connected to the local TCP
service on 127.0.0.1:<port> (reach it from another peer with "peer forward" or
the SOCKS5 proxy). By default the expose lasts while this command runs; with
--bg it stays in the daemon until "peer expose --off <port>" or the daemon
stops. With the daemon in userspace mode (--userspace) the port is also
served on this peer's overlay address, for TCP and for UDP (to the local UDP
service on 127.0.0.1:<port>).`,
	setup: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		cl := c.socketFlag(fs)
		bg := fs.Bool("bg", false, "leave the port exposed in the daemon and return")
		off := fs.Bool("off", false, "stop exposing the port (one exposed with --bg)")
		return func(ctx context.Context, args []string) error {
			if err := wantArgs(args, "<port>"); err != nil {
				return err
			}
			p, err := strconv.ParseUint(args[0], 10, 16)
			if err != nil || p == 0 {
				return usage.Errorf("port %q: want 1-65535", args[0])
			}
			port := uint16(p)
			if *off && *bg {
				return usage.Errorf("--off and --bg do not go together")
			}
			if *off {
				if err := cl.Unexpose(ctx, port); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "port %d is no longer exposed\n", port)
				return nil
			}
			h, err := cl.Expose(ctx, port, *bg)
			if err != nil {
				return err
			}
			if *bg {
				fmt.Fprintf(c.stdout, "exposing 127.0.0.1:%d to allowed peers as port %d (until `peer expose --off %d`)\n", port, port, port)
				return nil
			}
			defer h.Close()
			fmt.Fprintf(c.stdout, "exposing 127.0.0.1:%d to allowed peers as port %d; interrupt to stop\n", port, port)
			gone := make(chan struct{})
			go func() {
				if r, ok := h.(io.Reader); ok {
					_, _ = io.Copy(io.Discard, r)
				}
				close(gone)
			}()
			select {
			case <-ctx.Done():
				return nil
			case <-gone:
				return fmt.Errorf("the daemon stopped; port %d is no longer exposed", port)
			}
		}
	},
}
