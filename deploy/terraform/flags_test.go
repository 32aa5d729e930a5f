package terraform_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/bintest"
	"github.com/keymesh/keymesh/internal/testutil/ci"
)

// The deployment configures the servers only through KEYMESH_<FLAG>
// variables. This test builds each binary, reads its flags from -h, and
// checks that every variable the deployment sets names one of them, so a
// renamed flag breaks here and not on a server at boot.

// repoRoot is the repository root relative to this folder.
const repoRoot = "../.."

// binaryFlags builds cmd/<name> and returns the flags its usage lists (for
// the peer, those of `peer up`). It skips when cmd/<name> has no Go files yet.
func binaryFlags(t *testing.T, name string) map[string]bool {
	t.Helper()
	if gos, _ := filepath.Glob(filepath.Join(repoRoot, "cmd", name, "*.go")); len(gos) == 0 {
		ci.Skipf(t, "cmd/%s has no Go files yet", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bins := bintest.Shared(t)
	bin := map[string]string{"rendezvous": bins.Rendezvous, "relay": bins.Relay, "peer": bins.Peer}[name]
	args := []string{"-h"}
	if name == "peer" {
		args = []string{"up", "-h"}
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	out, _ := cmd.CombinedOutput() // -h exits 0 or 2 depending on the flag set
	flags := map[string]bool{}
	re := regexp.MustCompile(`^\s*--?([a-z0-9][a-z0-9-]*)\b`)
	for _, line := range strings.Split(string(out), "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			flags[m[1]] = true
		}
	}
	if len(flags) == 0 {
		t.Fatalf("%s %s listed no flags; it printed:\n%s", name, strings.Join(args, " "), out)
	}
	return flags
}

// flagOf turns KEYMESH_TICKET_KEY_FILE into ticket-key-file.
func flagOf(env string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(env, "KEYMESH_")), "_", "-")
}

var envRef = regexp.MustCompile(`KEYMESH_[A-Z0-9_]+`)

// pendingFlags are flags the deployment already sets (from the design) that
// the binaries do not have yet: reported, not failed. Remove an entry when
// its flag exists. An unknown KEYMESH_ variable is ignored by the binaries,
// so a pending one does no harm at run time; it just does nothing yet.
var pendingFlags = map[string][]string{
	"rendezvous": {"alt-listen"},
	"relay":      {},
}

// deployVars returns every KEYMESH_ variable the deployment sets for a
// server: in Terraform's local.services env (not for the peer), in its
// systemd unit and in its example environment file, with where each is.
func deployVars(t *testing.T, name string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	if name != "peer" {
		services, _ := rootServices(t, nil)
		for k := range services.GetAttr(name).GetAttr("env").Type().AttributeTypes() {
			out[k] = append(out[k], "deploy/terraform/locals.tf")
		}
	}
	for _, f := range []string{"keymesh-" + name + ".service", "keymesh-" + name + ".env.example"} {
		p := filepath.Join("..", "systemd", f)
		fh, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			// Settings, set or commented out as an example, but not prose.
			line = strings.TrimPrefix(line, "Environment=")
			line = strings.TrimPrefix(line, "#")
			if m := envRef.FindString(line); m != "" && strings.HasPrefix(line, m+"=") {
				out[m] = append(out[m], "deploy/systemd/"+f)
			}
		}
		fh.Close()
	}
	return out
}

func TestDeploymentSetsOnlyRealFlags(t *testing.T) {
	for _, name := range []string{"rendezvous", "relay", "peer"} {
		t.Run(name, func(t *testing.T) {
			vars := deployVars(t, name)
			if len(vars) < 3 {
				t.Fatalf("found only %d KEYMESH_ variables for %s", len(vars), name)
			}
			flags := binaryFlags(t, name)
			var names []string
			for v := range vars {
				names = append(names, v)
			}
			sort.Strings(names)
			for _, v := range names {
				where := strings.Join(vars[v], ", ")
				pending := slices.Contains(pendingFlags[name], flagOf(v))
				switch {
				case flags[flagOf(v)] && pending:
					t.Logf("%s now has --%s: remove it from pendingFlags", name, flagOf(v))
				case flags[flagOf(v)]:
				case pending:
					t.Logf("pending: %s has no --%s yet (%s sets %s)", name, flagOf(v), where, v)
				default:
					t.Errorf("%s has no flag --%s for %s (set in %s)", name, flagOf(v), v, where)
				}
			}
		})
	}
}

func TestFlagOf(t *testing.T) {
	if got := flagOf("KEYMESH_TICKET_KEY_FILE"); got != "ticket-key-file" {
		t.Fatalf("flagOf = %q", got)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	bintest.RemoveShared()
	os.Exit(code)
}
