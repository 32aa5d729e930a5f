package docs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/keymesh/keymesh/internal/flagdoc"
	"github.com/keymesh/keymesh/internal/flagenv"
)

const (
	flagsDoc  = "flags.md"
	updateEnv = "KEYMESH_UPDATE_DOCS"
	regenHint = "regenerate it with: " + updateEnv + "=1 go test ./docs -run TestFlagsDoc (then review the diff)"
)

// section is one table of docs/flags.md: a binary or a peer subcommand.
type section struct {
	binary string // rendezvous, relay or peer
	table  flagdoc.Table
}

// TestFlagsDoc checks docs/flags.md against the binaries' --help, or
// rewrites it when KEYMESH_UPDATE_DOCS=1.
func TestFlagsDoc(t *testing.T) {
	sections := helpSections(t)
	want := renderDoc(sections)

	if os.Getenv(updateEnv) == "1" {
		if err := os.WriteFile(flagsDoc, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote docs/%s (%d sections)", flagsDoc, len(sections))
		return
	}
	have, err := os.ReadFile(flagsDoc)
	if err != nil {
		t.Fatalf("docs/%s: %v; %s", flagsDoc, err, regenHint)
	}
	docTables, err := flagdoc.ParseMarkdown(string(have))
	if err != nil {
		t.Fatalf("docs/%s: %v; %s", flagsDoc, err, regenHint)
	}
	var wantTables []flagdoc.Table
	for _, s := range sections {
		wantTables = append(wantTables, s.table)
	}
	if problems := flagdoc.Diff(wantTables, docTables); len(problems) > 0 {
		t.Fatalf("docs/%s does not match the binaries' --help:\n  %s\n%s", flagsDoc, strings.Join(problems, "\n  "), regenHint)
	}
	if string(have) != want {
		line, h, w := firstDiff(string(have), want)
		t.Fatalf("docs/%s has every flag right but differs from the generated text at line %d (prose, order or layout):\n  have %q\n  want %q\n%s",
			flagsDoc, line, h, w, regenHint)
	}
}

// helpSections runs every binary's --help and every peer subcommand's, in a
// clean environment, and parses the flags. Machine-dependent defaults are
// replaced by placeholders so the document is the same everywhere.
func helpSections(t *testing.T) []section {
	t.Helper()
	work := t.TempDir()
	home := filepath.Join(work, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	env := baseEnv(home)
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ = strings.Cut(host, ".")
	uidDir := "/keymesh-" + strconv.Itoa(os.Getuid()) + "/"

	normalize := func(r result) string {
		text := r.stdout + r.stderr // rendezvous writes its help to stderr, relay to stdout
		text = strings.ReplaceAll(text, fmt.Sprintf("%q", fmt.Sprintf("%s-%d", host, r.pid)), `"<hostname>-<pid>"`)
		text = strings.ReplaceAll(text, home+"/", "~/")
		text = strings.ReplaceAll(text, uidDir, "/keymesh-<uid>/")
		return text
	}
	parse := func(binary, title string, r result) section {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("%s --help: exit %d, want 0\n%s%s", title, r.code, r.stdout, r.stderr)
		}
		text := normalize(r)
		for _, leak := range []string{home, fmt.Sprintf("%s-%d", host, r.pid)} {
			if strings.Contains(text, leak) {
				t.Fatalf("%s --help shows machine-dependent %q; teach helpSections to replace it", title, leak)
			}
		}
		rows, err := flagdoc.Parse(text)
		if err != nil {
			t.Fatalf("%s --help: %v\n%s", title, err, text)
		}
		for _, row := range rows {
			if want := flagenv.EnvName(row.Flag); row.Env != want {
				t.Errorf("%s --help shows --%s as $%s, but flagenv reads $%s", title, row.Flag, row.Env, want)
			}
		}
		return section{binary: binary, table: flagdoc.Table{Title: title, Rows: rows}}
	}

	var out []section
	for _, b := range []string{"rendezvous", "relay"} {
		s := parse(b, b, runCmd(t, work, env, b, "--help"))
		if len(s.table.Rows) == 0 {
			t.Fatalf("%s --help lists no flags", b)
		}
		out = append(out, s)
	}
	for _, cmd := range peerCommands(t, work, env) {
		r := runCmd(t, work, env, "peer", "help", cmd)
		if r.code == 2 && strings.Contains(r.stderr, "unknown command") {
			continue // built in (help, version): no flags
		}
		s := parse("peer", "peer "+cmd, r)
		if len(s.table.Rows) == 0 {
			continue
		}
		// `peer X --help` must say the same as `peer help X`.
		if h := runCmd(t, work, env, "peer", cmd, "--help"); h.code != 0 || h.stdout != r.stdout {
			t.Errorf("peer %s --help (exit %d) differs from peer help %s:\n%s%s", cmd, h.code, cmd, h.stdout, h.stderr)
		}
		out = append(out, s)
	}
	return out
}

// peerCommands reads the command list of `peer help`.
func peerCommands(t *testing.T, dir string, env []string) []string {
	t.Helper()
	r := runCmd(t, dir, env, "peer", "help")
	if r.code != 0 {
		t.Fatalf("peer help: exit %d\n%s", r.code, r.stderr)
	}
	_, list, ok := strings.Cut(r.stdout, "\ncommands:\n")
	if !ok {
		t.Fatalf("peer help has no \"commands:\" list:\n%s", r.stdout)
	}
	var cmds []string
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			break
		}
		cmds = append(cmds, f[0])
	}
	if len(cmds) < 5 {
		t.Fatalf("peer help lists only %v", cmds)
	}
	return cmds
}

// renderDoc is the whole of docs/flags.md.
func renderDoc(sections []section) string {
	var b strings.Builder
	b.WriteString(`# Flags and environment variables

<!-- Generated from the binaries' --help by docs/flags_test.go: do not edit by hand.
     Regenerate with: KEYMESH_UPDATE_DOCS=1 go test ./docs -run TestFlagsDoc -->

Every flag of ` + "`rendezvous`, `relay` and `peer`" + ` can also be set by an environment variable:
` + "`KEYMESH_`" + ` and the flag name in upper case with ` + "`_` for `-` (`--log-format` is `KEYMESH_LOG_FORMAT`)" + `.

- A flag given on the command line wins over its variable. An empty variable counts as unset, so a
  flag whose empty value means "off" (` + "`--admin`" + `) can only be turned off on the command line.
- Repeatable flags take a comma-separated list from the environment (` + "`KEYMESH_RELAY=a:3479,b:3479`" + `).
- Boolean variables take ` + "`true`/`false` (or `1`/`0`)" + `; any other value stops the program with an error.
  That includes ` + "`KEYMESH_VERSION`" + `: a version string left in a server's environment stops it from starting.
- A default shown as ` + "`~`" + ` is the user's home, ` + "`<uid>`" + ` the user's numeric id, ` + "`<hostname>-<pid>`" + ` the
  host's short name and the process id. An empty default cell means no value (for ` + "`peer`" + `: also false or 0).
  The peer's defaults follow ` + "`$XDG_CONFIG_HOME` (key: `$XDG_CONFIG_HOME/keymesh/peer.key`) and `$XDG_RUNTIME_DIR`" + `
  (socket: ` + "`$XDG_RUNTIME_DIR/keymesh/peer.sock`" + `) when those are set.
`)
	if shared := sharedVariables(sections); shared != "" {
		b.WriteString("- The variables are not scoped to one binary. Read by more than one: " + shared +
			". Give each process its own environment (a unit or container each), not one shared file.\n")
	}
	b.WriteString("\nSections: ")
	for i, s := range sections {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "[%s](#%s)", s.table.Title, strings.ReplaceAll(s.table.Title, " ", "-"))
	}
	b.WriteString(".\n")
	for _, s := range sections {
		b.WriteString("\n")
		b.WriteString(flagdoc.Markdown(s.table.Title, s.table.Rows))
	}
	return b.String()
}

// sharedVariables lists the variables more than one binary reads.
func sharedVariables(sections []section) string {
	readers := map[string]map[string]bool{}
	for _, s := range sections {
		for _, r := range s.table.Rows {
			if readers[r.Env] == nil {
				readers[r.Env] = map[string]bool{}
			}
			readers[r.Env][s.binary] = true
		}
	}
	var names []string
	for env, bins := range readers {
		if len(bins) > 1 {
			names = append(names, env)
		}
	}
	sort.Strings(names)
	var parts []string
	for _, env := range names {
		var bins []string
		for _, b := range []string{"rendezvous", "relay", "peer"} {
			if readers[env][b] {
				bins = append(bins, b)
			}
		}
		parts = append(parts, fmt.Sprintf("`%s` (%s)", env, strings.Join(bins, ", ")))
	}
	return strings.Join(parts, ", ")
}

// firstDiff finds the first line where a and b differ.
func firstDiff(a, b string) (line int, la, lb string) {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return i + 1, x, y
		}
	}
	return 0, "", ""
}
