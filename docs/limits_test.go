package docs_test

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

const limitsDoc = "limits.md"

// limitFlag picks the flags that bound what strangers can make a server or
// peer do: rates, bursts, caps, quotas, table sizes and timeouts. A new
// limit needs no registration here; naming it like one is enough.
var limitFlag = regexp.MustCompile(`(^|-)(rate|burst|max|cap|quota|limit|timeout|budget|sources|per-)(-|$)|-(rate|limit|timeout|quota)$|^max-`)

// notLimits are flags named like limits that bound nothing a stranger sends.
var notLimits = map[string]bool{
	"peer up --register-timeout": true, // how long the peer waits for its own server
}

// TestLimitsDoc checks docs/limits.md, the one table of every limit with its
// flag and default, against the binaries' --help, or rewrites it when
// KEYMESH_UPDATE_DOCS=1.
func TestLimitsDoc(t *testing.T) {
	want := renderLimits(helpSections(t))
	if os.Getenv(updateEnv) == "1" {
		if err := os.WriteFile(limitsDoc, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	have, err := os.ReadFile(limitsDoc)
	if err != nil {
		t.Fatalf("docs/%s: %v; %s", limitsDoc, err, strings.Replace(regenHint, "TestFlagsDoc", "TestLimitsDoc", 1))
	}
	if string(have) != want {
		line, h, w := firstDiff(string(have), want)
		t.Fatalf("docs/%s differs from the binaries' --help at line %d:\n  have %q\n  want %q\n%s",
			limitsDoc, line, h, w, strings.Replace(regenHint, "TestFlagsDoc", "TestLimitsDoc", 1))
	}
}

func renderLimits(sections []section) string {
	var b strings.Builder
	b.WriteString(`# Limits

<!-- Generated from the binaries' --help by docs/limits_test.go: do not edit by hand.
     Regenerate with: KEYMESH_UPDATE_DOCS=1 go test ./docs -run TestLimitsDoc -->

Every bound on what a stranger's packets, connections or keys can make a keymesh process do, with the
flag that sets it and its default. Per-source limits count an IPv4 address or an IPv6 /64, never a
port. Tables that a limit bounds forget old entries when full; they do not refuse new ones.

| binary | flag | default | meaning |
| --- | --- | --- | --- |
`)
	n := 0
	for _, s := range sections {
		if s.binary == "peer" && s.table.Title != "peer up" {
			continue // CLI commands talk to the local daemon only
		}
		for _, r := range s.table.Rows {
			if !limitFlag.MatchString(r.Flag) || notLimits[s.table.Title+" --"+r.Flag] {
				continue
			}
			def := ""
			if r.Default != "" {
				def = "`" + strings.Trim(r.Default, `"`) + "`"
			}
			fmt.Fprintf(&b, "| %s | `--%s` | %s | %s |\n", s.table.Title, r.Flag, def, strings.ReplaceAll(r.Meaning, "|", `\|`))
			n++
		}
	}
	if n == 0 {
		b.WriteString("| (none) | | | |\n")
	}
	return b.String()
}
