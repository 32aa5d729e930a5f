package relaycmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/obs"
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
		return 0
	}
	if err != nil {
		return fail(stderr, err)
	}
	if c.version {
		fmt.Fprintln(stdout, obs.Version())
		return 0
	}
	if c.genKey {
		fmt.Fprint(stdout, crypto.NewTicketKeyLine(byte(c.genKeyID)))
		return 0
	}
	log, err := obs.NewLogger(stderr, c.opts.LogFormat, c.opts.LogLevel)
	if err != nil {
		return fail(stderr, usageErr("%v", err))
	}
	if err := Run(ctx, c.opts, log); err != nil {
		return fail(stderr, err)
	}
	return 0
}

// fail prints err as one line and returns its exit status.
func fail(w io.Writer, err error) int {
	msg := strings.TrimPrefix(err.Error(), errUsage.Error()+": ")
	fmt.Fprintln(w, "relay: "+strings.ReplaceAll(msg, "\n", " "))
	if errors.Is(err, errUsage) {
		return 2
	}
	return 1
}
