package relaybench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/keymesh/keymesh/internal/testutil/bintest"
)

// Binaries are the programs a run starts.
type Binaries struct {
	Relay   string // cmd/relay
	Derper  string // tailscale.com/cmd/derper, from tools/derper
	Derpgen string // tools/derper/derpgen
}

// Build compiles what the servers need into dir (a temporary directory):
// cmd/relay with bintest (the module's one build of its commands), and
// derper and derpgen from the tool module tools/derper, which pins
// tailscale.com (the keymesh module does not depend on it).
func Build(ctx context.Context, dir string, servers []string) (Binaries, error) {
	b := Binaries{Derper: filepath.Join(dir, "derper"), Derpgen: filepath.Join(dir, "derpgen")}
	if slices.Contains(servers, Ticket) || slices.Contains(servers, Stream) || slices.Contains(servers, TURN) {
		bins, err := bintest.Build(ctx, dir)
		if err != nil {
			return b, err
		}
		b.Relay = bins.Relay
	}
	if !slices.Contains(servers, Derper) {
		return b, nil
	}
	goBin, err := bintest.GoTool()
	if err != nil {
		return b, err
	}
	out, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return b, fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return b, fmt.Errorf("run from the keymesh repository (no go.mod here)")
	}
	tools := filepath.Join(filepath.Dir(mod), "tools", "derper")
	for _, args := range [][]string{
		{"build", "-o", b.Derper, "tailscale.com/cmd/derper"},
		{"build", "-o", b.Derpgen, "./derpgen"},
	} {
		cmd := exec.CommandContext(ctx, goBin, args...)
		cmd.Dir = tools
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(args, " "), tools, err, tail(string(out), 3000))
		}
	}
	return b, nil
}
