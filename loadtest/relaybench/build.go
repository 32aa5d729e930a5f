package relaybench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Binaries are the programs a run starts.
type Binaries struct {
	Relay   string // cmd/relay
	Derper  string // tailscale.com/cmd/derper, from tools/derper
	Derpgen string // tools/derper/derpgen
}

// Build compiles the binaries the servers need into dir: cmd/relay from
// this module, derper and derpgen from the tool module tools/derper (which
// pins tailscale.com; the keymesh module does not depend on it).
func Build(ctx context.Context, dir string, servers []string) (Binaries, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return Binaries{}, fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return Binaries{}, fmt.Errorf("run from the keymesh repository (no go.mod here)")
	}
	root := filepath.Dir(mod)
	b := Binaries{Relay: filepath.Join(dir, "relay"), Derper: filepath.Join(dir, "derper"), Derpgen: filepath.Join(dir, "derpgen")}
	run := func(wd string, args ...string) error {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = wd
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(args, " "), wd, err, tail(string(out), 3000))
		}
		return nil
	}
	need := map[string]bool{}
	for _, s := range servers {
		need[s] = true
	}
	if need[Ticket] || need[Stream] || need[TURN] {
		if err := run(root, "build", "-o", b.Relay, "./cmd/relay"); err != nil {
			return b, err
		}
	}
	if need[Derper] {
		tools := filepath.Join(root, "tools", "derper")
		if err := run(tools, "build", "-o", b.Derper, "tailscale.com/cmd/derper"); err != nil {
			return b, err
		}
		if err := run(tools, "build", "-o", b.Derpgen, "./derpgen"); err != nil {
			return b, err
		}
	}
	return b, nil
}
