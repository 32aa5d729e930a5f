// Command loadtest drives the project's measurements: the NAT lab's
// traversal matrix, load generators for the rendezvous and relay servers, and
// data-path throughput against a raw UDP baseline.
//
//	loadtest faults      recovery from faults under a paced stream, in the netns lab (root)
//	loadtest matrix      traversal success by NAT-type pair, in the netns lab (root)
//	loadtest peers       N simulated peers registering and connecting
//	loadtest relay       one generator against keymesh's relays, derper and coturn
//	loadtest turn        coturn's own TURN client against our TURN and coturn
//	loadtest relayflows  ticket-relay forwarding at 1..10,000 flows vs raw UDP
//	loadtest throughput  session throughput direct and relayed vs raw UDP
//	loadtest regionkill  a paced stream across regions while one region dies (root)
//	loadtest attack      attacks on real servers while legitimate peers work (root)
//	loadtest tun         iperf3 over the keymesh TUN beside wireguard-go, in the netns lab (root)
//
// Each subcommand is a package under loadtest/ (matrix's is matrixcmd,
// relay's is relaybench, turn's is turn) with the same entry, Main(ctx,
// args) error; what they share is package loadtest/cli. This file only
// dispatches.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/keymesh/keymesh/loadtest/attack"
	"github.com/keymesh/keymesh/loadtest/faults"
	"github.com/keymesh/keymesh/loadtest/matrixcmd"
	"github.com/keymesh/keymesh/loadtest/peers"
	"github.com/keymesh/keymesh/loadtest/regionkill"
	"github.com/keymesh/keymesh/loadtest/relaybench"
	"github.com/keymesh/keymesh/loadtest/relayflows"
	"github.com/keymesh/keymesh/loadtest/throughput"
	"github.com/keymesh/keymesh/loadtest/tun"
	"github.com/keymesh/keymesh/loadtest/turn"
)

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string) error
}

func commands() []command {
	return []command{
		{"faults", "recovery from faults under a paced stream in the netns lab (needs root)", faults.Main},
		{"matrix", "traversal success by NAT-type pair in the netns lab (needs root)", matrixcmd.Main},
		{"peers", "N simulated peers registering and connecting against rendezvous servers", peers.Main},
		{"relay", "one generator against the ticket, stream and TURN relays, derper and coturn, side by side", relaybench.Main},
		{"turn", "coturn's own TURN client (turnutils_uclient) against our TURN and coturn", turn.Main},
		{"relayflows", "ticket-relay forwarding at 1, 100 and 10,000 flows against raw UDP", relayflows.Main},
		{"throughput", "session throughput direct and relayed against raw UDP", throughput.Main},
		{"regionkill", "a paced stream across anycast regions while every instance of one dies (needs root)", regionkill.Main},
		{"attack", "attacks at a stated rate on real servers, with legitimate peers (needs root)", attack.Main},
		{"tun", "iperf3 TCP and UDP over the keymesh TUN beside wireguard-go, in the netns lab (needs root)", tun.Main},
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: loadtest <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(os.Stderr, "  %-11s %s\n", c.name, c.summary)
	}
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, c := range commands() {
		if c.name != os.Args[1] {
			continue
		}
		err := c.run(ctx, os.Args[2:])
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "loadtest %s: %v\n", c.name, err)
			os.Exit(1)
		}
		return
	}
	fmt.Fprintf(os.Stderr, "loadtest: unknown command %q\n", os.Args[1])
	usage()
	os.Exit(2)
}
