package deploy_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/tools/go/packages"
)

// peerPlatforms are the platforms besides Linux that `make release` builds
// the peer for.
var peerPlatforms = []struct{ goos, goarch string }{
	{"darwin", "arm64"}, {"darwin", "amd64"}, {"windows", "amd64"},
}

// TestPeerTypeChecksOnOtherPlatforms type-checks ./cmd/peer and every
// package it imports, from source, as the Go compiler would see them with
// GOOS and GOARCH of each platform `make release` builds the peer for: a
// file that uses a Linux-only symbol without a build constraint fails here.
// It does not compile or link (a cold cross-build takes about a minute per
// platform on this machine); KEYMESH_CROSS_BUILD=1 runs the real `go build`
// as well.
func TestPeerTypeChecksOnOtherPlatforms(t *testing.T) {
	for _, p := range peerPlatforms {
		t.Run(p.goos+"-"+p.goarch, func(t *testing.T) {
			cfg := &packages.Config{
				Mode: packages.NeedName | packages.NeedImports | packages.NeedDeps | packages.NeedSyntax | packages.NeedTypes,
				Dir:  repoRoot,
				Env:  append(os.Environ(), "GOOS="+p.goos, "GOARCH="+p.goarch, "CGO_ENABLED=0"),
			}
			pkgs, err := packages.Load(cfg, "./cmd/peer")
			if err != nil {
				t.Fatalf("load ./cmd/peer for %s/%s: %v", p.goos, p.goarch, err)
			}
			if len(pkgs) != 1 || pkgs[0].Name != "main" {
				t.Fatalf("load ./cmd/peer for %s/%s: got %d packages, want the main package", p.goos, p.goarch, len(pkgs))
			}
			var errs []string
			packages.Visit(pkgs, nil, func(pkg *packages.Package) {
				for _, e := range pkg.Errors {
					errs = append(errs, e.Error())
				}
			})
			if len(errs) > 0 {
				t.Errorf("./cmd/peer does not build for %s/%s:\n%s", p.goos, p.goarch, strings.Join(errs, "\n"))
			}
		})
	}
}

// TestPeerCrossBuild runs `go build ./cmd/peer` for each platform when
// KEYMESH_CROSS_BUILD=1 (the long form; `make release` does the same).
func TestPeerCrossBuild(t *testing.T) {
	if os.Getenv("KEYMESH_CROSS_BUILD") != "1" {
		t.Skip("set KEYMESH_CROSS_BUILD=1 to compile and link the peer for every platform (TestPeerTypeChecksOnOtherPlatforms covers the short form)")
	}
	for _, p := range peerPlatforms {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		out := filepath.Join(t.TempDir(), "peer")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/peer")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "GOOS="+p.goos, "GOARCH="+p.goarch, "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("go build ./cmd/peer for %s/%s: %v\n%s", p.goos, p.goarch, err, b)
		}
		cancel()
	}
}
