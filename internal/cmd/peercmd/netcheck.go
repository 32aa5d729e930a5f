package peercmd

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"
)

var cmdNetcheck = &command{
	name:    "netcheck",
	summary: "report this network's NAT behaviour and relay latency",
	help: `Measures the network the daemon sits in, from a fresh socket: whether UDP
works at all, the public (NAT-facing) address and whether the NAT kept the
local port, the NAT's mapping behaviour (endpoint-independent,
address-dependent, address-and-port-dependent; "none" without NAT) and its
filtering behaviour (RFC 5780, against the rendezvous server: telling the
behaviours apart needs the server's second address, its --alt-listen), and
the round trip to each relay the server advertises.

--json prints {"udp", "local", "public", "port_preserved", "mapping",
"filtering", "relays": [{"addr", "rtt_ms", "error"}]}.`,
	setup: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		cl := c.socketFlag(fs)
		asJSON := fs.Bool("json", false, "print JSON")
		return func(ctx context.Context, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			rep, err := cl.Netcheck(ctx)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(c.stdout, rep)
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "udp\t%v\n", rep.UDP)
			if rep.UDP {
				fmt.Fprintf(tw, "public address\t%v (local %v, port preserved: %v)\n", rep.Reflexive, rep.Local, rep.PortPreserved)
				fmt.Fprintf(tw, "mapping\t%s\n", rep.Mapping)
				fmt.Fprintf(tw, "filtering\t%s\n", rep.Filtering)
				hard := "no: plain hole punching"
				if rep.Hard() {
					hard = "yes: needs birthday-paradox punching against an easy peer, or the relay"
				}
				fmt.Fprintf(tw, "hard NAT\t%s\n", hard)
			}
			for _, r := range rep.Relays {
				if r.Error != "" {
					fmt.Fprintf(tw, "relay %s\t%s\n", r.Addr, r.Error)
					continue
				}
				fmt.Fprintf(tw, "relay %s\t%.1fms\n", r.Addr, r.RTTms)
			}
			return tw.Flush()
		}
	},
}
