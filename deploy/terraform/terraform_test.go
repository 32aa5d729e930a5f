package terraform_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2/hclwrite"

	"github.com/keymesh/keymesh/internal/testutil/ci"
)

// The deployment in this folder must pass every check.

func TestFormatted(t *testing.T) {
	for _, p := range checkFormatted(loadConfig(t, ".")) {
		t.Error(p)
	}
	// The other HCL files: example variables, terraform test files, mocks.
	var extra []string
	for _, pat := range []string{"*.tfvars.example", "tests/*.tftest.hcl", "tests/mocks/*/*.tfmock.hcl"} {
		m, _ := filepath.Glob(pat)
		extra = append(extra, m...)
	}
	if len(extra) < 3 {
		t.Fatalf("found only %v of the example, test and mock files", extra)
	}
	for _, f := range extra {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(hclwrite.Format(b), b) {
			t.Errorf("%s: not in canonical format (run `terraform fmt -recursive`)", f)
		}
	}
}

func TestVariablesDescribedAndTyped(t *testing.T) {
	c := loadConfig(t, ".")
	if n := len(c["."].blocks("variable")); n < 5 {
		t.Fatalf("root module has %d variables; the loader found too few .tf files", n)
	}
	for _, p := range checkVariables(c) {
		t.Error(p)
	}
}

func TestEveryRegionRunsBothServers(t *testing.T) {
	c := loadConfig(t, ".")
	for _, p := range checkRegionModule(c) {
		t.Error(p)
	}
	for _, p := range checkRegionSlots(c) {
		t.Error(p)
	}
}

func TestHealthChecksOnHealthz(t *testing.T) {
	for _, p := range checkHealthChecks(loadConfig(t, ".")) {
		t.Error(p)
	}
}

func TestOutputsIncludeConnectString(t *testing.T) {
	for _, p := range checkOutputs(loadConfig(t, ".")) {
		t.Error(p)
	}
}

// TestTerraformFmt runs the real `terraform fmt -check` when Terraform is
// installed (it is not a Debian package, so it is not installed for the
// test; TestFormatted applies the same formatter through hclwrite).
func TestTerraformFmt(t *testing.T) {
	tf, err := exec.LookPath("terraform")
	if err != nil {
		ci.Skip(t, "terraform is not installed; TestFormatted covers formatting with hclwrite")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tf, "fmt", "-check", "-recursive", "-diff", ".")
	rc := filepath.Join(t.TempDir(), "empty.tfrc")
	if err := os.WriteFile(rc, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc, "CHECKPOINT_DISABLE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("terraform fmt -check: %v\n%s", err, out)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Fatalf("terraform fmt -check printed:\n%s", s)
	}
}
