// Package flagenv lets every command-line flag also be set by an environment
// variable: flag --ticket-key-file is KEYMESH_TICKET_KEY_FILE. A flag given on
// the command line wins over the environment.
package flagenv

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// Prefix is the environment variable prefix.
const Prefix = "KEYMESH_"

// EnvName returns the environment variable for a flag name.
func EnvName(flagName string) string {
	return Prefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse parses args into fs, then sets every flag not given on the command
// line from its environment variable, if that is set. Repeatable flags take
// a comma-separated list from the environment.
func Parse(fs *flag.FlagSet, args []string) error {
	return ParseEnv(fs, args, os.LookupEnv)
}

// ParseEnv is Parse with an injected environment lookup.
func ParseEnv(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		v, ok := lookup(EnvName(f.Name))
		if !ok || v == "" {
			return // an empty variable counts as unset
		}
		vals := []string{v}
		if _, repeat := f.Value.(interface{ Repeatable() }); repeat {
			vals = strings.Split(v, ",")
		}
		for _, one := range vals {
			if e := fs.Set(f.Name, strings.TrimSpace(one)); e != nil {
				err = fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, e)
				return
			}
		}
	})
	return err
}

// Strings is a repeatable string flag (also a comma-separated list in the
// environment).
type Strings []string

// String implements flag.Value.
func (s *Strings) String() string { return strings.Join(*s, ",") }

// Set implements flag.Value.
func (s *Strings) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// Repeatable marks the flag as taking a list from the environment.
func (s *Strings) Repeatable() {}

// Usage writes a table of flags and their variables, for --help.
func Usage(fs *flag.FlagSet) func() {
	return func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage of %s:\n", fs.Name())
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" {
				def = fmt.Sprintf(" (default %q)", f.DefValue)
			}
			fmt.Fprintf(w, "  --%s  [$%s]%s\n      %s\n", f.Name, EnvName(f.Name), def, f.Usage)
		})
	}
}
