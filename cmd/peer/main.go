// Command peer is the keymesh peer: `peer up` runs the daemon, the other
// subcommands (status, ping, pipe, listen, forward, expose, keygen, id) talk
// to it. See `peer help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/keymesh/keymesh/internal/cmd/peercmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := peercmd.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
