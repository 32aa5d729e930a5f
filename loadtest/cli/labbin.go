package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/keymesh/keymesh/internal/testutil/bintest"
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
