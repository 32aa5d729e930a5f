// Package flagdoc turns the --help text of keymesh's binaries into rows of a
// flag table and renders them as Markdown, so docs/flags.md is generated
// from what the binaries really print and a test can tell when the two
// drift apart.
//
// Two help layouts are understood. The servers' (flagenv.Usage):
//
//	usage of relay:
//	  --listen  [$KEYMESH_LISTEN] (default ":3479")
//	      UDP address of the ticket relay
//
// and the peer CLI's, with an argument name and the default (when not the
// zero value) at the end of the usage line:
//
//	flags (each also settable as the environment variable shown):
//	  --count int  [$KEYMESH_COUNT]
//	      number of pings; 0 pings until interrupted (default 4)
package flagdoc

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Row is one flag of a binary or subcommand.
type Row struct {
	Flag    string // name without dashes: "log-format"
	Arg     string // argument name the help shows ("duration"), or empty
	Env     string // environment variable: "KEYMESH_LOG_FORMAT"
	Default string // default value as the help shows it (empty: none shown)
	Meaning string // the usage text, on one line
}

// header matches a flag's first line: two spaces, --name, an optional
// argument name, two spaces, [$ENV] and an optional quoted default.
var header = regexp.MustCompile("^  --([A-Za-z0-9][-A-Za-z0-9_.]*)(?: ([^\\s`]+))?  \\[\\$([A-Za-z0-9_]+)\\](?: \\(default (\".*\")\\))?$")

// trailingDefault matches the peer layout's default at the end of a usage
// line.
var trailingDefault = regexp.MustCompile(`^(.*?) ?\(default ([^()]*)\)$`)

// Parse reads a --help text and returns its flags in the order printed. A
// line that starts like a flag ("  --") but does not have the expected
// layout is an error, so a change in the help format is noticed rather than
// silently dropping flags. A text without flags gives no rows and no error.
func Parse(helpText string) ([]Row, error) {
	lines := strings.Split(strings.ReplaceAll(helpText, "\r\n", "\n"), "\n")
	// The servers' layout starts with "usage of X:" and keeps the default
	// on the header line; then a "(default ...)" in the usage is prose.
	serverLayout := len(lines) > 0 && strings.HasPrefix(lines[0], "usage of ")
	var rows []Row
	seen := map[string]bool{}
	var cur *Row
	var usage []string
	finish := func() error {
		if cur == nil {
			return nil
		}
		text := strings.Join(usage, " ")
		if !serverLayout && cur.Default == "" {
			if m := trailingDefault.FindStringSubmatch(text); m != nil {
				text, cur.Default = m[1], m[2]
			}
		}
		cur.Meaning = strings.TrimSpace(text)
		if err := checkText("usage of --"+cur.Flag, cur.Meaning); err != nil {
			return err
		}
		rows = append(rows, *cur)
		cur, usage = nil, nil
		return nil
	}
	for i, line := range lines {
		if strings.HasPrefix(line, "  --") {
			if err := finish(); err != nil {
				return nil, err
			}
			m := header.FindStringSubmatch(line)
			if m == nil {
				return nil, fmt.Errorf("line %d %q: want `  --name [arg]  [$ENV] (default \"v\")`: %w", i+1, line, ErrLayout)
			}
			if seen[m[1]] {
				return nil, fmt.Errorf("line %d: --%s listed twice: %w", i+1, m[1], ErrLayout)
			}
			seen[m[1]] = true
			cur = &Row{Flag: m[1], Arg: m[2], Env: m[3]}
			if m[4] != "" {
				def, err := strconv.Unquote(m[4])
				if err != nil {
					return nil, fmt.Errorf("line %d: default %s of --%s: %v: %w", i+1, m[4], m[1], err, ErrLayout)
				}
				if err := checkText("default of --"+m[1], def); err != nil {
					return nil, err
				}
				if strings.Contains(def, "`") {
					return nil, fmt.Errorf("default of --%s has a backtick: %w", m[1], ErrLayout)
				}
				cur.Default = def
			}
			continue
		}
		if cur == nil {
			continue // prose before the flags
		}
		if strings.TrimSpace(line) == "" || !strings.HasPrefix(line, "    ") {
			if err := finish(); err != nil {
				return nil, err
			}
			continue
		}
		usage = append(usage, strings.TrimSpace(line))
	}
	if err := finish(); err != nil {
		return nil, err
	}
	return rows, nil
}

// checkText refuses control characters, which no table cell can hold, and
// invalid UTF-8.
func checkText(what, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8: %w", what, ErrLayout)
	}
	for _, r := range s {
		if unicode.IsControl(r) && r != '\t' {
			return fmt.Errorf("%s has control character %q: %w", what, r, ErrLayout)
		}
	}
	return nil
}
