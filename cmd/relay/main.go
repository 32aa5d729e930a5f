// Command relay is keymesh's relay server: the stateless UDP ticket relay,
// and TURN for standard ICE clients. Run `relay --help` for its flags; each
// is also an environment variable (KEYMESH_LISTEN, KEYMESH_TICKET_KEY_FILE,
// ...). The wiring lives in internal/cmd/relaycmd.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/keymesh/keymesh/internal/cmd/relaycmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := relaycmd.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
