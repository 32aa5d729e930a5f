// Command rendezvous is keymesh's rendezvous server: STUN, the peer
// registry by public key and hole-punch coordination on one UDP port. See
// `rendezvous --help`; every flag is also a KEYMESH_* environment variable.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/keymesh/keymesh/internal/cmd/rendezvouscmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := rendezvouscmd.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
