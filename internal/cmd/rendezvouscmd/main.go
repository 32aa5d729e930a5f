package rendezvouscmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
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
	return usage.Serve(stderr, "rendezvous", o.LogFormat, o.LogLevel, func(log *slog.Logger) error {
		return Run(ctx, o, stdout, log)
	})
}
