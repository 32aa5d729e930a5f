package terraform_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The checks must catch what they are for: each case copies the deployment,
// breaks one thing, and wants the check to report it.

// copyConfig copies every .tf file under src into a new temporary folder.
func copyConfig(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".terraform" {
			return filepath.SkipDir
		}
		if d.IsDir() || filepath.Ext(path) != ".tf" {
			return nil
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// mutate replaces the only occurrence of old in file (relative to dir) by
// new. It fails the test when old is not there exactly once, so the cases
// follow the configuration as it changes.
func mutate(t *testing.T, dir, file, old, new string) {
	t.Helper()
	p := filepath.Join(dir, file)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), old); n != 1 {
		t.Fatalf("%s: %q occurs %d times, want once; update this test case", file, old, n)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestChecksCatchMistakes(t *testing.T) {
	type edit struct{ file, old, new string }
	cases := []struct {
		name  string
		edits []edit
		check func(config) []string
		want  string
	}{
		{
			name:  "unformatted file",
			edits: []edit{{"providers.tf", "  alias  = \"r2\"\n  region = local.slot_regions[2]", "  alias = \"r2\"\n  region = local.slot_regions[2]"}},
			check: checkFormatted,
			want:  "providers.tf: not in canonical format",
		},
		{
			name:  "variable without description",
			edits: []edit{{"variables.tf", "  description = \"Log level of the servers: debug, info, warn or error.\"\n", ""}},
			check: checkVariables,
			want:  "variable log_level: no description",
		},
		{
			name:  "variable with empty description",
			edits: []edit{{"variables.tf", "\"Log level of the servers: debug, info, warn or error.\"", "\" \""}},
			check: checkVariables,
			want:  "variable log_level: description must be a non-empty string",
		},
		{
			name:  "module variable without type",
			edits: []edit{{"modules/region/variables.tf", "  description = \"Deployment name: the prefix of resource names.\"\n  type        = string\n", "  description = \"Deployment name: the prefix of resource names.\"\n"}},
			check: checkVariables,
			want:  "variable name: no type",
		},
		{
			name:  "two regions accepted",
			edits: []edit{{"variables.tf", "length(var.regions) >= 3", "length(var.regions) >= 2"}},
			check: checkRegionSlots,
			want:  "accepts 2 regions; at least 3 are required",
		},
		{
			name:  "more regions accepted than slots",
			edits: []edit{{"variables.tf", "length(var.regions) <= 6", "length(var.regions) <= 7"}},
			check: checkRegionSlots,
			want:  "with 7 regions, no region module runs in sa-east-1",
		},
		{
			name:  "two modules on one provider",
			edits: []edit{{"regions.tf", "aws         = aws.r2", "aws         = aws.r1"}},
			check: checkRegionSlots,
			want:  "module.region_1 and module.region_2 both run in eu-west-1",
		},
		{
			name:  "provider slot reads the wrong region",
			edits: []edit{{"providers.tf", "[for i in range(6) : try(var.regions[i].name, local.primary_region)]", "[for i in range(6) : try(var.regions[i + 1].name, local.primary_region)]"}},
			check: checkRegionSlots,
			want:  "vpc_cidr argument is not the vpc_cidr of us-east-1",
		},
		{
			name:  "module slot never used",
			edits: []edit{{"regions.tf", "count  = length(var.regions) > 4 ? 1 : 0", "count  = 0"}},
			check: checkRegionSlots,
			want:  "with 5 regions, no region module runs in eu-central-1",
		},
		{
			name:  "region without relay",
			edits: []edit{{"regions.tf", "  relay            = merge(local.service_inputs.relay, { instance_count = try(var.regions[1].relay_count, 0) })\n", ""}},
			check: checkRegionSlots,
			want:  "module.region_1: no relay argument",
		},
		{
			name:  "module services without relay",
			edits: []edit{{"modules/region/main.tf", "    relay      = var.relay\n", ""}},
			check: checkRegionModule,
			want:  "local.services has no \"relay\"",
		},
		{
			name:  "auto scaling group for one server only",
			edits: []edit{{"modules/region/instances.tf", "resource \"aws_autoscaling_group\" \"this\" {\n  for_each = local.services", "resource \"aws_autoscaling_group\" \"this\" {\n  for_each = { rendezvous = var.rendezvous }"}},
			check: checkRegionModule,
			want:  "aws_autoscaling_group.this: for_each must be local.services",
		},
		{
			name:  "target group health check on /",
			edits: []edit{{"modules/region/load_balancers.tf", "path                = \"/healthz\"", "path                = \"/\""}},
			check: checkHealthChecks,
			want:  "path must be \"/healthz\"",
		},
		{
			name:  "endpoint group health check on the service port",
			edits: []edit{{"accelerator.tf", "health_check_port             = local.ports.admin", "health_check_port             = local.ports.rendezvous"}},
			check: checkHealthChecks,
			want:  "health_check_port must be the admin port",
		},
		{
			name:  "connect string on the relay port",
			edits: []edit{{"outputs.tf", "value       = \"${local.anycast_ips[0]}:${local.ports.rendezvous}#${local.server_peer_id}\"", "value       = \"${local.anycast_ips[0]}:${local.ports.relay}#${local.server_peer_id}\""}},
			check: checkOutputs,
			want:  "connect_string evaluates to",
		},
		{
			name:  "no connect string",
			edits: []edit{{"outputs.tf", "output \"connect_string\" {", "output \"connect_address\" {"}},
			check: checkOutputs,
			want:  "want one output \"connect_string\"",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyConfig(t, ".")
			if got := tc.check(loadConfig(t, dir)); len(got) != 0 {
				t.Fatalf("the unbroken copy already has problems: %q", got)
			}
			for _, e := range tc.edits {
				mutate(t, dir, e.file, e.old, e.new)
			}
			got := tc.check(loadConfig(t, dir))
			for _, p := range got {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Fatalf("check did not report %q; it reported %q", tc.want, got)
		})
	}
}
