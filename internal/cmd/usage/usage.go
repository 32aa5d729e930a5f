// Package usage is the one usage error of keymesh's commands (relay,
// rendezvous, peer): a bad flag, file or argument. Each command's Main prints
// it with Fail as one line, "<command>: <what is wrong> (see `<command>
// --help`)", and exits 2; any other error prints on one line and exits 1.
//
// The command packages beside it share one skeleton: main.go holds Main
// (arguments and standard streams in, exit status out), flags.go the
// Options and their parsing (every flag also a KEYMESH_* variable, package
// flagenv), and run.go Run(ctx, Options, stdout, logger), which wires the
// packages and serves until ctx ends. peercmd, a command of subcommands, has
// one file per subcommand in place of run.go. cmd/* only call Main.
package usage

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/keymesh/keymesh/internal/obs"
)

// Error is bad input to a command: what is wrong and how to mend it, in one
// line.
type Error struct{ err error }

// Errorf formats a usage error as fmt.Errorf does (%w wraps).
func Errorf(format string, args ...any) error {
	return &Error{err: fmt.Errorf(format, args...)}
}

func (e *Error) Error() string { return e.err.Error() }

// Unwrap returns the formatted error, for errors.Is and errors.As.
func (e *Error) Unwrap() error { return e.err }

// Is reports whether err is or wraps a usage Error.
func Is(err error) bool {
	var ue *Error
	return errors.As(err, &ue)
}

// Exit statuses of every command.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// Fail prints err to w as one line prefixed with prog and returns the exit
// status: ExitUsage, pointing at `<prog> --help`, for a usage Error, else
// ExitFailure.
func Fail(w io.Writer, prog string, err error) int {
	if Is(err) {
		fmt.Fprintf(w, "%s: %s (see `%s --help`)\n", prog, OneLine(err), prog)
		return ExitUsage
	}
	fmt.Fprintf(w, "%s: %s\n", prog, OneLine(err))
	return ExitFailure
}

// OneLine is err's message with its line breaks made spaces.
func OneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", " ")), " ")
}

// Serve is the end of every server command's Main: it makes the logger
// (obs.NewLogger: format text or json, a level; a bad one is a usage
// error) and runs run with it, and returns the exit status, printing run's
// error as Fail does.
func Serve(stderr io.Writer, prog, format, level string, run func(*slog.Logger) error) int {
	log, err := obs.NewLogger(stderr, format, level)
	if err != nil {
		return Fail(stderr, prog, Errorf("%w", err))
	}
	if err := run(log); err != nil {
		return Fail(stderr, prog, err)
	}
	return ExitOK
}
