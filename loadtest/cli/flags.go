package cli

import (
	"flag"
	"fmt"
)

// ParseOnlyFlags gives fs the usage text of `loadtest <name>` (about, then
// the flags), parses args and refuses positional arguments: the lab's
// subcommands take only flags.
func ParseOnlyFlags(fs *flag.FlagSet, name, about string, args []string) error {
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: loadtest %s [flags]\n\n%s\n\nflags:\n", name, about)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: loadtest %s takes only flags", fs.Arg(0), name)
	}
	return nil
}
