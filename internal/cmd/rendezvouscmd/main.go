package rendezvouscmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/keymesh/keymesh/internal/cmd/usage"
	"github.com/keymesh/keymesh/internal/obs"
)

// Main runs the command with args until ctx ends and returns the exit code:
// 0 after a clean shutdown, 2 for bad flags or files, 1 for other failures
// (one line on stderr, see package usage).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := ParseFlags(args, stderr, os.LookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		return usage.ExitOK
	}
	if err != nil {
		return usage.Fail(stderr, "rendezvous", err)
	}
	if o.Version {
		fmt.Fprintln(stdout, obs.Version())
		return usage.ExitOK
	}
	log, err := obs.NewLogger(stderr, o.LogFormat, o.LogLevel)
	if err != nil {
		return usage.Fail(stderr, "rendezvous", usage.Errorf("%w", err))
	}
	if err := Run(ctx, o, stdout, log); err != nil {
		return usage.Fail(stderr, "rendezvous", err)
	}
	return usage.ExitOK
}
