package peercmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/obs"

	"github.com/keymesh/keymesh/internal/cmd/usage"
)

// cli is one run of the command: its standard streams and environment.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	lookup         func(string) (string, bool)
}

func (c *cli) getenv(k string) string {
	v, _ := c.lookup(k)
	return v
}

// command is one subcommand. setup defines its flags on fs and returns the
// function that runs it with the positional arguments.
type command struct {
	name    string
	args    string
	summary string
	help    string
	setup   func(c *cli, fs *flag.FlagSet) func(ctx context.Context, args []string) error
}

func commands() []*command {
	return []*command{
		cmdKeygen, cmdID, cmdUp, cmdStatus, cmdPing, cmdNetcheck,
		cmdPipe, cmdListen, cmdForward, cmdExpose,
	}
}

// exitError ends the command with code after its output already said why.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// Main runs the peer command with args (without the program name) and
// returns the process exit code: 0 success, 1 failure, 2 bad usage.
// Cancelling ctx (SIGINT/SIGTERM in the binary) stops a running command.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr, lookup: os.LookupEnv}
	return c.main(ctx, args)
}

func (c *cli) main(ctx context.Context, args []string) int {
	if len(args) == 0 {
		c.topUsage(c.stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			if cmd := findCommand(args[1]); cmd != nil {
				c.commandUsage(c.stdout, cmd)
				return 0
			}
			fmt.Fprintf(c.stderr, "peer help: unknown command %q (see `peer help`)\n", args[1])
			return 2
		}
		c.topUsage(c.stdout)
		return 0
	case "version", "-version", "--version":
		fmt.Fprintln(c.stdout, "peer", obs.Version())
		return 0
	}
	cmd := findCommand(args[0])
	if cmd == nil {
		if strings.HasPrefix(args[0], "-") {
			fmt.Fprintf(c.stderr, "peer: flags go after the command: `peer <command> %s` (see `peer help`)\n", args[0])
		} else {
			fmt.Fprintf(c.stderr, "peer: unknown command %q (see `peer help`)\n", args[0])
		}
		return 2
	}
	fs := flag.NewFlagSet("peer "+cmd.name, flag.ContinueOnError)
	run := cmd.setup(c, fs)
	pos, err := parseArgs(fs, args[1:], c.lookup)
	if err == nil {
		err = run(ctx, pos)
	}
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errHelp):
		c.commandUsage(c.stdout, cmd)
		return 0
	case usage.Is(err):
		return usage.Fail(c.stderr, "peer "+cmd.name, err)
	case errors.As(err, &ee):
		return ee.code
	default:
		fmt.Fprintf(c.stderr, "peer %s: %s\n", cmd.name, oneLine(err))
		return 1
	}
}

func findCommand(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

// oneLine keeps an error message on one line.
func oneLine(err error) string {
	var ae *daemon.APIError
	if errors.As(err, &ae) {
		err = errors.New(ae.Msg)
	}
	msg := strings.TrimPrefix(err.Error(), "node: ") // the package's prefix says nothing to a CLI user
	return strings.Join(strings.Fields(msg), " ")
}

func (c *cli) topUsage(w io.Writer) {
	fmt.Fprint(w, `peer: reach other keymesh peers by their public key.

usage: peer <command> [flags] [args]

commands:
`)
	for _, cmd := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprint(w, `  help     show help for a command: peer help <command>
  version  print the version

Start a daemon with "peer up --server host:port#<server-id>"; the other
commands talk to it over its Unix socket. Every flag can also be set from the
environment: --allow-any is KEYMESH_ALLOW_ANY.
`)
}

func (c *cli) commandUsage(w io.Writer, cmd *command) {
	fmt.Fprintf(w, "usage: peer %s [flags] %s\n\n%s\n", cmd.name, cmd.args, strings.TrimSpace(cmd.help))
	fs := flag.NewFlagSet("peer "+cmd.name, flag.ContinueOnError)
	cmd.setup(c, fs)
	writeFlags(w, fs)
}

// wantArgs checks the number of positional arguments.
func wantArgs(args []string, names ...string) error {
	if len(args) < len(names) {
		return usage.Errorf("missing %s", strings.Join(names[len(args):], " "))
	}
	if len(args) > len(names) {
		return usage.Errorf("unexpected argument %q", args[len(names)])
	}
	return nil
}

// socketFlag adds --socket and returns the client it configures.
func (c *cli) socketFlag(fs *flag.FlagSet) *daemon.Client {
	cl := &daemon.Client{}
	fs.StringVar(&cl.Socket, "socket", defaultSocketPath(c.getenv), "`path` of the daemon's API socket")
	return cl
}

// printJSON writes v as indented JSON, the form of every --json output
// that is one object.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
