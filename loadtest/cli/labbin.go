package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/keymesh/keymesh/internal/testutil/bintest"
	"github.com/keymesh/keymesh/loadtest/labrun"
)

// LabBinaries returns the rendezvous, relay and peer binaries the lab
// commands run: those in dir when given (--bin), else freshly built into a
// temporary directory that cleanup removes.
func LabBinaries(ctx context.Context, dir string) (bins bintest.Binaries, cleanup func(), err error) {
	if dir != "" {
		bins, err = bintest.Prebuilt(dir)
		return bins, func() {}, err
	}
	tmp, err := os.MkdirTemp("", "keymesh-bin-")
	if err != nil {
		return bins, func() {}, err
	}
	cleanup = func() { os.RemoveAll(tmp) }
	fmt.Fprintln(os.Stderr, "building rendezvous, relay and peer...")
	if bins, err = bintest.Build(ctx, tmp); err != nil {
		cleanup()
		return bins, func() {}, err
	}
	return bins, cleanup, nil
}

// LabLogger logs the lab's progress on stderr with -v, and nothing without.
func LabLogger(verbose bool) *slog.Logger {
	if verbose {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// NeedRoot returns the error of a lab subcommand run without root (the NAT
// lab makes network namespaces), nil as root.
func NeedRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: the NAT lab makes network namespaces (run with sudo)")
	}
	return nil
}

// Progress is a lab subcommand's progress bar of total steps on stderr.
func Progress(total int, desc string) *progressbar.ProgressBar {
	return progressbar.NewOptions(total,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}

// CloseLab closes the lab of `loadtest name`, saying on stderr why when that
// fails and, with keep, where the work directory is.
func CloseLab(name string, lab *labrun.Lab, keep bool) {
	if err := lab.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "loadtest %s: closing the lab: %v\n", name, err)
	}
	if keep {
		fmt.Fprintf(os.Stderr, "work directory kept: %s\n", lab.Work)
	}
}

// Lab is what the lab subcommands share: their --bin, --keep and -v flags
// (Flags) and the lab config they start from (Config).
type Lab struct {
	Bin           string // prebuilt binaries (LabBinaries)
	Keep, Verbose bool   // keep the work directory; log the lab's progress (LabLogger)
}

// Flags adds --bin, --keep and -v to fs.
func (l *Lab) Flags(fs *flag.FlagSet) {
	fs.StringVar(&l.Bin, "bin", "", "`directory` holding prebuilt rendezvous, relay and peer binaries (default: go build into a temporary directory)")
	fs.BoolVar(&l.Keep, "keep", false, "keep the work directory (keys, sockets, every process's log)")
	fs.BoolVar(&l.Verbose, "v", false, "log the lab's progress on stderr")
}

// Config refuses to run without root (NeedRoot), builds the binaries or
// takes --bin's (LabBinaries) and returns the config every lab starts from:
// the binaries, the logger and --keep. The caller defers cleanup.
func (l *Lab) Config(ctx context.Context) (cfg labrun.Config, cleanup func(), err error) {
	if err := NeedRoot(); err != nil {
		return cfg, func() {}, err
	}
	bins, cleanup, err := LabBinaries(ctx, l.Bin)
	if err != nil {
		return cfg, cleanup, err
	}
	return labrun.Config{Bins: bins, Logger: LabLogger(l.Verbose), KeepWork: l.Keep}, cleanup, nil
}
