// Package deploy_test checks the packaging files at the repository root:
// the Dockerfile (read, since no Docker engine runs here) and the Makefile's
// build and release recipes (through `make -n`).
package deploy_test

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/ci"
)

const repoRoot = ".."

var cmds = []string{"rendezvous", "relay", "peer"}

// stage is one FROM ... AS name section of a Dockerfile.
type stage struct {
	from  string
	lines []string
}

func parseDockerfile(text string) (map[string]*stage, []string) {
	stages := map[string]*stage{}
	var order []string
	var cur *stage
	// Join continuation lines first.
	text = strings.ReplaceAll(text, "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if strings.EqualFold(f[0], "FROM") {
			name := ""
			if n := len(f); n >= 4 && strings.EqualFold(f[n-2], "AS") {
				name = f[n-1]
			}
			from := f[1]
			if strings.HasPrefix(from, "--platform") {
				from = f[2]
			}
			cur = &stage{from: from}
			stages[name] = cur
			order = append(order, name)
			continue
		}
		if cur != nil {
			cur.lines = append(cur.lines, line)
		}
	}
	return stages, order
}

// checkDockerfile reports what the Dockerfile lacks: a static build of
// every command, and per command a final stage on a minimal base, as a
// non-root user, with the binary as entry point.
func checkDockerfile(text string) []string {
	var out []string
	stages, order := parseDockerfile(text)
	build, ok := stages["build"]
	if !ok {
		return []string{"no build stage"}
	}
	buildText := strings.Join(build.lines, "\n")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w", "-X github.com/keymesh/keymesh/internal/obs.version=${VERSION}"} {
		if !strings.Contains(buildText, want) {
			out = append(out, "build stage lacks "+want)
		}
	}
	for _, c := range cmds {
		if !strings.Contains(buildText, "./cmd/"+c) {
			out = append(out, "build stage does not build ./cmd/"+c)
		}
		st, ok := stages[c]
		if !ok {
			out = append(out, "no stage "+c)
			continue
		}
		// Follow FROM through local stages to the image it rests on, and
		// collect the USER lines on the way.
		base, users := st.from, []string{}
		for _, l := range st.lines {
			if strings.HasPrefix(strings.ToUpper(l), "USER ") {
				users = append(users, l)
			}
		}
		for i := 0; i < 5; i++ {
			parent, ok := stages[base]
			if !ok {
				break
			}
			for _, l := range parent.lines {
				if strings.HasPrefix(strings.ToUpper(l), "USER ") {
					users = append(users, l)
				}
			}
			base = parent.from
		}
		if !strings.HasPrefix(base, "gcr.io/distroless/static") && base != "scratch" {
			out = append(out, c+": final image rests on "+base+", want distroless/static or scratch")
		}
		if len(users) == 0 || regexp.MustCompile(`(?i)^USER\s+(0|root)\b`).MatchString(users[0]) {
			out = append(out, c+": no non-root USER")
		}
		text := strings.Join(st.lines, "\n")
		if !strings.Contains(text, "COPY --from=build /out/"+c+" ") {
			out = append(out, c+": does not copy /out/"+c)
		}
		if !regexp.MustCompile(`ENTRYPOINT \["/usr/local/bin/keymesh-` + c + `"\]`).MatchString(text) {
			out = append(out, c+": ENTRYPOINT is not its binary")
		}
	}
	if len(order) > 0 && !slices.Contains(cmds, order[len(order)-1]) {
		out = append(out, "the last (default) stage is not one of the binaries")
	}
	return out
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(repoRoot + "/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range checkDockerfile(string(b)) {
		t.Error("Dockerfile: " + p)
	}
}

func TestDockerfileCheckCatchesMistakes(t *testing.T) {
	b, err := os.ReadFile(repoRoot + "/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	good := string(b)
	cases := map[string]struct{ old, new, want string }{
		"cgo":      {"CGO_ENABLED=0", "CGO_ENABLED=1", "CGO_ENABLED=0"},
		"root":     {"USER 65532:65532", "USER root", "no non-root USER"},
		"fat base": {"FROM gcr.io/distroless/static-debian12:nonroot AS base", "FROM debian:bookworm AS base", "want distroless/static"},
		"no peer":  {"FROM base AS peer", "FROM base AS client", "no stage peer"},
	}
	for name, tc := range cases {
		if !strings.Contains(good, tc.old) {
			t.Fatalf("%s: Dockerfile has no %q; update the case", name, tc.old)
		}
		got := checkDockerfile(strings.Replace(good, tc.old, tc.new, 1))
		found := false
		for _, p := range got {
			found = found || strings.Contains(p, tc.want)
		}
		if !found {
			t.Errorf("%s: check did not report %q: %q", name, tc.want, got)
		}
	}
}

// makeDryRun returns what `make -n target` would run.
func makeDryRun(t *testing.T, args ...string) string {
	t.Helper()
	mk, err := exec.LookPath("make")
	if err != nil {
		ci.Skip(t, "make is not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, mk, append([]string{"-n", "-C", repoRoot}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n %v: %v\n%s", args, err, out)
	}
	return strings.ReplaceAll(string(out), "\\\n", " ")
}

func TestMakeRelease(t *testing.T) {
	out := makeDryRun(t, "release", "VERSION=v9.8.7")
	for _, c := range cmds {
		for _, arch := range []string{"amd64", "arm64"} {
			re := regexp.MustCompile(`CGO_ENABLED=0 GOOS=linux GOARCH=` + arch + `\s+go build -trimpath -ldflags '-s -w -X github.com/keymesh/keymesh/internal/obs.version=v9.8.7' -o dist/keymesh-` + c + `-linux-` + arch + ` ./cmd/` + c + `\n`)
			if !re.MatchString(out) {
				t.Errorf("make release does not build dist/keymesh-%s-linux-%s statically with the version; it runs:\n%s", c, arch, out)
			}
		}
	}
	for _, p := range []string{"darwin-arm64", "darwin-amd64", "windows-amd64.exe"} {
		goos, rest, _ := strings.Cut(p, "-")
		goarch := strings.TrimSuffix(rest, ".exe")
		re := regexp.MustCompile(`CGO_ENABLED=0 GOOS=` + goos + ` GOARCH=` + goarch + `\s+go build -trimpath -ldflags '-s -w -X github.com/keymesh/keymesh/internal/obs.version=v9.8.7' -o dist/keymesh-peer-` + regexp.QuoteMeta(p) + ` ./cmd/peer\n`)
		if !re.MatchString(out) {
			t.Errorf("make release does not build dist/keymesh-peer-%s; it runs:\n%s", p, out)
		}
	}
	if !strings.Contains(out, "SHA256SUMS") || !strings.Contains(out, "dist/VERSION") {
		t.Errorf("make release writes no SHA256SUMS or VERSION:\n%s", out)
	}
}

func TestMakeTargets(t *testing.T) {
	out := makeDryRun(t, "build", "VERSION=v1")
	for _, c := range cmds {
		if !strings.Contains(out, "-o bin/"+c+" ./cmd/"+c) {
			t.Errorf("make build does not build bin/%s:\n%s", c, out)
		}
	}
	for target, want := range map[string]string{"test": "bash scripts/test.sh", "demo": "bash scripts/demo.sh", "clean": "rm -rf bin dist"} {
		if out := makeDryRun(t, target); !strings.Contains(out, want) {
			t.Errorf("make %s runs %q, want %q", target, out, want)
		}
	}
}
