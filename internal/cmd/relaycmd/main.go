package relaycmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/obs"

	"github.com/keymesh/keymesh/internal/cmd/usage"
)

// Main runs the relay command with args (without the program name) and
// returns the exit status: 0 after a clean stop, 1 when the relay fails, 2
// for a bad command line or configuration (one line on stderr saying what
// is wrong and how to fix it).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return MainEnv(ctx, args, os.LookupEnv, stdout, stderr)
}

// MainEnv is Main with an injected environment lookup.
func MainEnv(ctx context.Context, args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) int {
	c, err := parse(args, lookup, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return usage.ExitOK
	}
	if err != nil {
		return usage.Fail(stderr, "relay", err)
	}
	if c.version {
		fmt.Fprintln(stdout, obs.Version())
		return usage.ExitOK
	}
	if c.genKey {
		fmt.Fprint(stdout, crypto.NewTicketKeyLine(byte(c.genKeyID)))
		return usage.ExitOK
	}
	return usage.Serve(stderr, "relay", c.opts.LogFormat, c.opts.LogLevel, func(log *slog.Logger) error {
		return Run(ctx, c.opts, stdout, log)
	})
}
