package peercmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/keymesh/keymesh/internal/cmd/usage"
	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/policy"
)

var cmdPing = &command{
	name:    "ping",
	args:    "<peer-id|overlay-addr>",
	summary: "ping a peer and show the path taken",
	help: `Pings a peer through its session, like "tailscale ping", one line per reply:

  pong from <id-short> (<overlay>) via <direct|relay> <remote addr> in 1.2ms

The first ping to a new peer also sets up the session (rendezvous, hole
punching, relay), so it can take longer. A ping that times out is reported and
the next one is sent; any other failure (unknown peer, refused) ends the
command at once. Exit status 0 when at least one reply came, else 1. With
--until-direct it stops at the first reply over a direct path, and fails
(exit 1) when none came within --count pings.

--json prints one JSON object per reply: {"seq", "peer", "overlay", "path",
"remote", "rtt_ms"}; a failed ping prints {"seq", "peer", "error"}.`,
	setup: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		cl := c.socketFlag(fs)
		count := fs.Int("count", 4, "number of pings; 0 pings until interrupted")
		interval := fs.Duration("interval", time.Second, "time between pings")
		timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for each reply")
		asJSON := fs.Bool("json", false, "print one JSON object per reply")
		untilDirect := fs.Bool("until-direct", false, "stop at the first reply over a direct path (fail if none within --count)")
		return func(ctx context.Context, args []string) error {
			if err := wantArgs(args, "<peer-id|overlay-addr>"); err != nil {
				return err
			}
			peer, err := peerArg(args[0])
			if err != nil {
				return err
			}
			if *count < 0 {
				return usage.Errorf("--count %d: want 0 (forever) or more", *count)
			}
			if *interval <= 0 || *timeout <= 0 {
				return usage.Errorf("--interval and --timeout must be positive")
			}
			return c.ping(ctx, cl, peer, pingOpts{*count, *interval, *timeout, *asJSON, *untilDirect})
		}
	},
}

// pingLine is the --json form of one ping.
type pingLine struct {
	Seq     int     `json:"seq"`
	Peer    string  `json:"peer"`
	Overlay string  `json:"overlay,omitempty"`
	Path    string  `json:"path,omitempty"`
	Remote  string  `json:"remote,omitempty"`
	RTTms   float64 `json:"rtt_ms,omitempty"`
	Error   string  `json:"error,omitempty"`
}

type pingOpts struct {
	count             int
	interval, timeout time.Duration
	asJSON            bool
	untilDirect       bool
}

func (c *cli) ping(ctx context.Context, cl *daemon.Client, peer string, o pingOpts) error {
	enc := json.NewEncoder(c.stdout)
	asJSON := o.asJSON
	replies := 0
	for seq := 1; o.count == 0 || seq <= o.count; seq++ {
		if seq > 1 {
			select {
			case <-ctx.Done():
				return pingDone(replies)
			case <-time.After(o.interval):
			}
		}
		res, err := cl.Ping(ctx, peer, o.timeout)
		if ctx.Err() != nil {
			return pingDone(replies)
		}
		if err != nil {
			var ae *daemon.APIError
			fatal := !errors.As(err, &ae) || ae.Code != http.StatusGatewayTimeout
			if asJSON {
				_ = enc.Encode(pingLine{Seq: seq, Peer: peer, Error: oneLine(err)})
				if fatal {
					return &exitError{code: 1}
				}
			} else if fatal {
				return err
			} else {
				fmt.Fprintf(c.stderr, "no reply from %s within %s: %s\n", shortPeer(peer), o.timeout, oneLine(err))
			}
			continue
		}
		replies++
		if asJSON {
			_ = enc.Encode(pingLine{Seq: seq, Peer: res.Peer, Overlay: res.Overlay, Path: res.Path, Remote: res.Remote, RTTms: res.RTTms})
		} else {
			fmt.Fprintf(c.stdout, "pong from %s (%s) via %s %s in %s\n", shortPeer(res.Peer), res.Overlay, res.Path, res.Remote, fmtMs(res.RTTms))
		}
		if o.untilDirect && res.Path == "direct" {
			return nil
		}
	}
	if o.untilDirect {
		if !asJSON {
			fmt.Fprintf(c.stderr, "no direct path to %s after %d pings\n", shortPeer(peer), o.count)
		}
		return &exitError{code: 1}
	}
	return pingDone(replies)
}

func pingDone(replies int) error {
	if replies == 0 {
		return &exitError{code: 1}
	}
	return nil
}

// shortPeer abbreviates a peer ID to its first eight characters, as logs do.
func shortPeer(p string) string {
	if len(p) == 52 {
		return p[:8]
	}
	return p
}

// peerArg checks a peer argument: a peer ID, an overlay address, or a
// name such as web.keymesh, which the daemon resolves (peer up --name,
// --allow name=, --names-file).
func peerArg(s string) (string, error) {
	p, err := daemon.ParseDestination(s)
	if err == nil {
		return p, nil
	}
	if isHostName(s) {
		return s, nil
	}
	return "", usage.Errorf("%q is not a peer ID, overlay address or name such as web.keymesh (a peer ID is the 52 characters `peer id` prints)", s)
}

// isHostName reports whether s is a DNS name of two labels or more.
func isHostName(s string) bool {
	labels := strings.Split(strings.TrimSuffix(s, "."), ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if policy.CheckName(l) != nil {
			return false
		}
	}
	return true
}
