package peercmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keymesh/keymesh/internal/daemon"
)

var cmdStatus = &command{
	name:    "status",
	summary: "show this peer, its registration and known peers",
	help: `Shows this peer (ID, overlay address, NAT-facing address, whether the
rendezvous server registered it) and the peers it knows, with the path each
one takes (direct or relay), its remote address and round-trip time.
--json prints the daemon's status object.`,
	setup: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		cl := c.socketFlag(fs)
		asJSON := fs.Bool("json", false, "print JSON")
		return func(ctx context.Context, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			st, err := cl.Status(ctx)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(c.stdout, st)
			}
			writeStatus(c.stdout, st, time.Now())
			return nil
		}
	},
}

// writeStatus prints a status table in the manner of `tailscale status`:
// one line for this peer, one per known peer, then what the daemon serves.
func writeStatus(w io.Writer, st daemon.DaemonStatus, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	var self []string
	if st.Registered {
		self = append(self, "registered")
	} else {
		reason := "not registered"
		if st.Error != "" {
			reason += " (" + st.Error + ")"
		}
		self = append(self, reason)
	}
	if st.Reflexive != "" {
		self = append(self, "nat-facing "+st.Reflexive)
	}
	if st.Server != "" {
		self = append(self, "server "+st.Server)
	}
	if st.Relay != "" {
		self = append(self, "relay "+st.Relay)
	}
	fmt.Fprintf(tw, "%s\t%s\tself\t%s\n", st.Overlay, st.ID, strings.Join(self, "; "))
	for _, p := range st.Peers {
		info := []string{p.Path}
		if p.Remote != "" {
			info[0] += " " + p.Remote
		}
		if p.RTTms > 0 {
			info = append(info, "rtt "+fmtMs(p.RTTms))
		}
		if !p.LastSeen.IsZero() {
			info = append(info, "last seen "+ago(now.Sub(p.LastSeen)))
		}
		fmt.Fprintf(tw, "%s\t%s\tpeer\t%s\n", p.Overlay, p.ID, strings.Join(info, "; "))
	}
	tw.Flush()
	if len(st.Peers) == 0 {
		fmt.Fprintln(w, "# no peers yet: try `peer ping <peer-id>`")
	}
	if len(st.Local) > 0 {
		fmt.Fprintf(w, "# local addresses: %s\n", strings.Join(st.Local, ", "))
	}
	if st.SOCKS5 != "" {
		fmt.Fprintf(w, "# socks5 proxy on %s\n", st.SOCKS5)
	}
	if len(st.Exposed) > 0 {
		ports := make([]string, len(st.Exposed))
		for i, p := range st.Exposed {
			ports[i] = fmt.Sprint(p)
		}
		fmt.Fprintf(w, "# exposed ports: %s\n", strings.Join(ports, ", "))
	}
}

func fmtMs(ms float64) string {
	if ms < 10 {
		return fmt.Sprintf("%.2fms", ms)
	}
	return fmt.Sprintf("%.1fms", ms)
}

func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	default:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
}
