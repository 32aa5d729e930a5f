// Package results records what a loadtest command measured, so that every
// figure in the README can be traced to the command line, commit and machine
// that printed it.
//
// A command that feeds the README takes --record <prefix> and, when it has
// finished, calls Write: <prefix>.json holds the command's data beside a Meta
// (date, commit, CPU model, core count, the exact command line), and
// <prefix>.md holds the Markdown the command printed. In README.md the table
// sits between the lines
//
//	<!-- results: docs/results/NAME -->
//	<!-- /results -->
//
// under a ```sh block that holds the command line, and a test in ./docs
// checks that the block equals NAME.md and that the command is the one
// NAME.json records.
package results

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// Meta says where and how a result was measured.
type Meta struct {
	// Command is the command line that printed the result, as a user
	// types it from the repository's root: "go run ./loadtest faults ...".
	Command  string    `json:"command"`
	Date     time.Time `json:"date"`
	Commit   string    `json:"commit"`
	Dirty    bool      `json:"dirty,omitempty"`
	CPUModel string    `json:"cpu_model"`
	Cores    int       `json:"cores"`
	Go       string    `json:"go"`
	OS       string    `json:"os"`
}

// Record is the content of a <prefix>.json file.
type Record struct {
	Meta Meta            `json:"meta"`
	Data json.RawMessage `json:"data"`
}

// ErrNoPrefix is returned by Write when it is given an empty prefix.
var ErrNoPrefix = errors.New("results: empty --record prefix")

// Write records data and the Markdown a command printed at prefix.json and
// prefix.md. args are the loadtest arguments from the subcommand on
// (os.Args[1:] of the loadtest binary); they become Meta.Command.
func Write(prefix string, args []string, data any, markdown string) error {
	if prefix == "" {
		return ErrNoPrefix
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("results: encoding data: %w", err)
	}
	rec := Record{Meta: Collect(args), Data: raw}
	js, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("results: encoding record: %w", err)
	}
	if dir := filepath.Dir(prefix); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("results: %w", err)
		}
	}
	if err := os.WriteFile(prefix+".json", append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	md := strings.TrimSpace(markdown) + "\n"
	if err := os.WriteFile(prefix+".md", []byte(md), 0o644); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	return nil
}

// Read loads prefix.json and prefix.md.
func Read(prefix string) (Record, string, error) {
	var rec Record
	js, err := os.ReadFile(prefix + ".json")
	if err != nil {
		return rec, "", fmt.Errorf("results: %w", err)
	}
	if err := json.Unmarshal(js, &rec); err != nil {
		return rec, "", fmt.Errorf("results: %s.json: %w", prefix, err)
	}
	md, err := os.ReadFile(prefix + ".md")
	if err != nil {
		return rec, "", fmt.Errorf("results: %w", err)
	}
	return rec, string(md), nil
}

// Collect describes this run: the command line built from args, now, the
// commit and the machine.
func Collect(args []string) Meta {
	m := Meta{
		Command:  CommandLine(args),
		Date:     time.Now().UTC().Truncate(time.Second),
		CPUModel: cpuModel(),
		Cores:    runtime.NumCPU(),
		Go:       runtime.Version(),
		OS:       runtime.GOOS + "/" + runtime.GOARCH,
	}
	m.Commit, m.Dirty = commit()
	return m
}

// CommandLine renders loadtest arguments as the line a user types:
// "go run ./loadtest " followed by the arguments, each quoted for a POSIX
// shell where it needs it.
func CommandLine(args []string) string {
	parts := []string{"go", "run", "./loadtest"}
	for _, a := range args {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("-_./=:,+@%", r):
		default:
			safe = false
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// commit names the checked-out commit, from git when it is there (go run
// does not stamp version control information), else from the build info.
func commit() (string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "git", "rev-parse", "HEAD").Output(); err == nil {
		dirty := false
		if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
			dirty = len(bytes.TrimSpace(st)) > 0
		}
		return strings.TrimSpace(string(out)), dirty
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			return rev, dirty
		}
	}
	return "unknown", false
}
