package peercmd

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/keymesh/keymesh/internal/flagenv"

	"github.com/keymesh/keymesh/internal/cmd/usage"
)

// errHelp asks Main to print the command's help and exit 0.
var errHelp = errors.New("help requested")

// parseArgs parses flags anywhere among the arguments (`peer ping B
// --count 3` works as well as `peer ping --count 3 B`; after "--"
// everything is positional), then fills unset flags from KEYMESH_*
// variables. It returns the positional arguments.
func parseArgs(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) ([]string, error) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, usage.Errorf("%s", flagError(err))
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if i := len(args) - len(rest); i > 0 && args[i-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if lookup == nil {
		lookup = os.LookupEnv
	}
	if err := flagenv.ParseEnv(fs, nil, lookup); err != nil {
		return nil, usage.Errorf("%v", err)
	}
	return pos, nil
}

// flagError rewords the flag package's errors into one short line.
func flagError(err error) string {
	s := err.Error()
	if name, ok := strings.CutPrefix(s, "flag provided but not defined: "); ok {
		return fmt.Sprintf("unknown flag %s", dashes(name))
	}
	if name, ok := strings.CutPrefix(s, "flag needs an argument: "); ok {
		return fmt.Sprintf("flag %s needs a value", dashes(name))
	}
	// invalid value "x" for flag -count: parse error
	if i := strings.Index(s, " for flag -"); i >= 0 {
		rest := s[i+len(" for flag "):]
		name, why, _ := strings.Cut(rest, ": ")
		return fmt.Sprintf("%s for flag %s: %s", s[:i], dashes(name), why)
	}
	return s
}

// writeFlags lists a command's flags with their environment variables.
func writeFlags(w io.Writer, fs *flag.FlagSet) {
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if len(names) == 0 {
		return
	}
	sort.Strings(names)
	fmt.Fprintln(w, "\nflags (each also settable as the environment variable shown):")
	for _, n := range names {
		f := fs.Lookup(n)
		arg, usage := flag.UnquoteUsage(f)
		head := "  --" + f.Name
		if arg != "" {
			head += " " + arg
		}
		def := ""
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "%s  [$%s]\n      %s%s\n", head, flagenv.EnvName(f.Name), usage, def)
	}
}

// dashes writes a flag name the way the help shows it: --name.
func dashes(name string) string {
	return "--" + strings.TrimLeft(name, "-")
}
