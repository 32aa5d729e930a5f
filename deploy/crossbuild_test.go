package deploy_test

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

// typeCheckPlatforms are the platforms the short form type-checks: one per
// operating system. darwin/amd64 differs from darwin/arm64 only in files
// for one architecture, which this module has none of
// (TestNoArchSpecificFiles) and which its dependencies are built for by
// `make release` and the long form.
var typeCheckPlatforms = []struct{ goos, goarch string }{
	{"darwin", "arm64"}, {"windows", "amd64"},
}

// TestNoArchSpecificFiles: no Go file of this module is only for some
// architectures (a _<arch>.go name or a build constraint naming one).
func TestNoArchSpecificFiles(t *testing.T) {
	archs := []string{"386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle", "ppc64", "ppc64le", "riscv64", "s390x", "wasm"}
	nameRe := regexp.MustCompile(`_(` + strings.Join(archs, "|") + `)(_test)?\.go$`)
	tagRe := regexp.MustCompile(`(?m)^//go:build .*\b(` + strings.Join(archs, "|") + `)\b`)
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		if nameRe.MatchString(d.Name()) {
			t.Errorf("%s is only for one architecture: type-check it in TestPeerTypeChecksOnOtherPlatforms", path)
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if tagRe.Match(b) {
			t.Errorf("%s has a build constraint naming an architecture: type-check it in TestPeerTypeChecksOnOtherPlatforms", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPeerTypeChecksOnOtherPlatforms type-checks ./cmd/peer and every
// package it imports, from source, as the Go compiler would see them with
// the GOOS and GOARCH of macOS and Windows: a file that uses a Linux-only
// symbol without a build constraint fails here.
// It does not compile or link (a cold cross-build takes about a minute per
// platform on this machine); KEYMESH_CROSS_BUILD=1 runs the real `go build`
// as well.
func TestPeerTypeChecksOnOtherPlatforms(t *testing.T) {
	for _, p := range typeCheckPlatforms {
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
