// Package cli is what the loadtest subcommands share: the usage text and the
// flags-only check of every subcommand (ParseOnlyFlags); for those that run
// the NAT lab, their --bin, --keep and -v flags and the config they start
// from (Lab), the binaries and logger, the progress bar and the closing of
// the lab; and a few helpers for their tables. Each subcommand is its own
// package under loadtest/ with the same entry,
//
//	func Main(ctx context.Context, args []string) error
//
// which parses args (the flags after the subcommand's name) and runs it;
// loadtest/main.go only dispatches. Main returns flag.ErrHelp after -h.
package cli

import (
	"fmt"
	"strings"
	"syscall"

	"github.com/keymesh/keymesh/internal/natlab"
)

// NATTypeNames lists the lab's NAT types, comma-separated, for flag help.
func NATTypeNames() string {
	var s []string
	for _, t := range natlab.AllTypes() {
		s = append(s, string(t))
	}
	return strings.Join(s, ",")
}

// Ratio formats a/b as "1.23×", or "n/a" when b is 0.
func Ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// RaiseFileLimit lifts RLIMIT_NOFILE as far as allowed (children inherit
// it) and returns the limit now in force, 0 if unknown.
func RaiseFileLimit() uint64 {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return 0
	}
	want := syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if lim.Max >= want.Max || syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return 0
	}
	return lim.Cur
}
