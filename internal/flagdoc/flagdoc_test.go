package flagdoc

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// serverHelp is a cut of `relay --help` (flagenv.Usage layout).
const serverHelp = `usage of relay:
  --acme-http-port  [$KEYMESH_ACME_HTTP_PORT] (default "0")
      port of the HTTP-01 challenge listener (default 80)
  --acme-storage  [$KEYMESH_ACME_STORAGE]
      directory for ACME accounts and certificates (default ~/.local/share/keymesh/certs)
  --dev  [$KEYMESH_DEV] (default "false")
      without --ticket-key-file, use a random in-memory ticket key (development only: tickets die with the process)
  --ticket-key-file  [$KEYMESH_TICKET_KEY_FILE]
      ticket key file: lines ` + "`<id> <64 hex>`" + `, the first seals, all open (make one with --gen-ticket-key)
  --empty  [$KEYMESH_EMPTY] (default "a \"q\" | b")
      
`

// peerHelp is a cut of `peer up --help` (peer CLI layout).
const peerHelp = `usage: peer up [flags] --server host:port#<server-id>

Runs the peer daemon in the foreground.
  --not-a-flag-line-because-it-is-prose? no: prose lines never start like this

flags (each also settable as the environment variable shown):
  --allow peer-id  [$KEYMESH_ALLOW]
      accept sessions from this peer-id (repeatable)
  --key path  [$KEYMESH_KEY]
      key file path (made if missing) (default /home/u/.config/keymesh/peer.key)
  --no-direct  [$KEYMESH_NO_DIRECT]
      never use direct paths: always the relay
  --server host:port#server-id  [$KEYMESH_SERVER]
      rendezvous server: host:port#server-id (required; the server prints it)
`

func TestParseServerLayout(t *testing.T) {
	rows, err := Parse(serverHelp)
	if err != nil {
		t.Fatal(err)
	}
	want := []Row{
		{Flag: "acme-http-port", Env: "KEYMESH_ACME_HTTP_PORT", Default: "0", Meaning: "port of the HTTP-01 challenge listener (default 80)"},
		{Flag: "acme-storage", Env: "KEYMESH_ACME_STORAGE", Meaning: "directory for ACME accounts and certificates (default ~/.local/share/keymesh/certs)"},
		{Flag: "dev", Env: "KEYMESH_DEV", Default: "false", Meaning: "without --ticket-key-file, use a random in-memory ticket key (development only: tickets die with the process)"},
		{Flag: "ticket-key-file", Env: "KEYMESH_TICKET_KEY_FILE", Meaning: "ticket key file: lines `<id> <64 hex>`, the first seals, all open (make one with --gen-ticket-key)"},
		{Flag: "empty", Env: "KEYMESH_EMPTY", Default: `a "q" | b`},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Fatalf("got\n%#v\nwant\n%#v", rows, want)
	}
}

func TestParsePeerLayout(t *testing.T) {
	// The prose line starting with "  --" has no [$ENV]: a layout error.
	if _, err := Parse(peerHelp); !errors.Is(err, ErrLayout) {
		t.Fatalf("prose line that looks like a flag: err = %v, want ErrLayout", err)
	}
	rows, err := Parse(strings.Replace(peerHelp, "  --not-a-flag", "  not-a-flag", 1))
	if err != nil {
		t.Fatal(err)
	}
	want := []Row{
		{Flag: "allow", Arg: "peer-id", Env: "KEYMESH_ALLOW", Meaning: "accept sessions from this peer-id (repeatable)"},
		{Flag: "key", Arg: "path", Env: "KEYMESH_KEY", Default: "/home/u/.config/keymesh/peer.key", Meaning: "key file path (made if missing)"},
		{Flag: "no-direct", Env: "KEYMESH_NO_DIRECT", Meaning: "never use direct paths: always the relay"},
		{Flag: "server", Arg: "host:port#server-id", Env: "KEYMESH_SERVER", Meaning: "rendezvous server: host:port#server-id (required; the server prints it)"},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Fatalf("got\n%#v\nwant\n%#v", rows, want)
	}
}

func TestParseRefusesDriftedLayout(t *testing.T) {
	for name, text := range map[string]string{
		"no variable":    "usage of x:\n  --listen (default \":1\")\n      addr\n",
		"bad quoting":    "usage of x:\n  --listen  [$KEYMESH_LISTEN] (default \":1)\n      addr\n",
		"listed twice":   "usage of x:\n  --a  [$KEYMESH_A]\n      a\n  --a  [$KEYMESH_A]\n      a\n",
		"newline in def": "usage of x:\n  --a  [$KEYMESH_A] (default \"x\\ny\")\n      a\n",
		"one space":      "usage of x:\n  --a [$KEYMESH_A]\n      a\n",
	} {
		if _, err := Parse(text); !errors.Is(err, ErrLayout) {
			t.Errorf("%s: err = %v, want ErrLayout", name, err)
		}
	}
	rows, err := Parse("peer: no flags here\n\nusage: peer version\n")
	if err != nil || len(rows) != 0 {
		t.Fatalf("text without flags: rows=%v err=%v", rows, err)
	}
}

func TestMarkdownRoundTrip(t *testing.T) {
	rows, err := Parse(serverHelp)
	if err != nil {
		t.Fatal(err)
	}
	rows = append(rows,
		Row{Flag: "odd", Arg: "a|b", Env: "KEYMESH_ODD", Default: `x\|y`, Meaning: `one ` + "`" + `co|de\` + "`" + ` <b> & *em* \ | and a lone ` + "`"},
		Row{Flag: "ents", Env: "KEYMESH_ENTS", Meaning: "&lt; is not <"},
	)
	md := Markdown("relay", rows)
	for _, bad := range []string{"<b>", "*em*"} {
		if strings.Contains(md, bad) {
			t.Errorf("%q left unescaped (outside a code span HTML or emphasis would eat it):\n%s", bad, md)
		}
	}
	if !strings.Contains(md, "| `--dev` | `KEYMESH_DEV` | `false` | without --ticket-key-file") {
		t.Errorf("row layout changed:\n%s", md)
	}
	doc := "# Flags\n\nintro | with a pipe\n\n" + md + "\nsome prose\n\n" + Markdown("peer version", nil)
	tables, err := ParseMarkdown(doc)
	if err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	want := []Table{{Title: "relay", Rows: rows}, {Title: "peer version"}}
	if !reflect.DeepEqual(tables, want) {
		t.Fatalf("round trip\n got %#v\nwant %#v\n%s", tables, want, doc)
	}
}

func TestParseMarkdownErrors(t *testing.T) {
	for name, doc := range map[string]string{
		"no heading":    "| flag | environment variable | default | meaning |\n",
		"three cells":   "## x\n\n| flag | environment variable | default | meaning |\n| --- | --- | --- | --- |\n| `--a` | `KEYMESH_A` | a |\n",
		"plain flag":    "## x\n\n| flag | environment variable | default | meaning |\n| --- | --- | --- | --- |\n| --a | `KEYMESH_A` | | a |\n",
		"plain default": "## x\n\n| flag | environment variable | default | meaning |\n| --- | --- | --- | --- |\n| `--a` | `KEYMESH_A` | 1 | a |\n",
		"no header":     "## x\n\n| `--a` | `KEYMESH_A` | | a |\n",
	} {
		if _, err := ParseMarkdown(doc); !errors.Is(err, ErrTable) {
			t.Errorf("%s: err = %v, want ErrTable", name, err)
		}
	}
}

func TestDiff(t *testing.T) {
	row := func(flag, env, def string) Row {
		return Row{Flag: flag, Env: env, Default: def, Meaning: flag + " things"}
	}
	want := []Table{
		{Title: "relay", Rows: []Row{row("listen", "KEYMESH_LISTEN", ":3479"), row("new", "KEYMESH_NEW", ""), row("admin", "KEYMESH_ADMIN", "127.0.0.1:9091")}},
		{Title: "peer netcheck", Rows: []Row{row("json", "KEYMESH_JSON", "")}},
	}
	doc := []Table{
		{Title: "relay", Rows: []Row{row("listen", "KEYMESH_LISTEN", ":3479"), row("gone", "KEYMESH_GONE", ""), row("admin", "KEYMESH_ADMIN_ADDR", "127.0.0.1:9090")}},
		{Title: "peer old", Rows: []Row{row("json", "KEYMESH_JSON", "")}},
	}
	got := Diff(want, doc)
	wantLines := []string{
		`relay: --new is not documented`,
		`relay: --admin: environment variable is "KEYMESH_ADMIN" but the doc says "KEYMESH_ADMIN_ADDR"`,
		`relay: --admin: default is "127.0.0.1:9091" but the doc says "127.0.0.1:9090"`,
		`relay: --gone is documented but relay has no such flag`,
		`section "peer netcheck" is missing (1 flags undocumented)`,
		`section "peer old" is documented but peer old has no flags (or does not exist)`,
	}
	if !reflect.DeepEqual(got, wantLines) {
		t.Fatalf("Diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantLines, "\n"))
	}
	if d := Diff(want, want); len(d) != 0 {
		t.Fatalf("equal tables differ: %v", d)
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts
// survives Markdown and ParseMarkdown unchanged.
func FuzzParse(f *testing.F) {
	f.Add(serverHelp)
	f.Add(strings.Replace(peerHelp, "  --not-a-flag", "  not-a-flag", 1))
	f.Add("usage of x:\n  --a b  [$KEYMESH_A] (default \"`|\\\\\")\n      <x> & `y|` \\ *z*\n")
	f.Add("flags:\n  --a  [$KEYMESH_A]\n      t (default  )\n")
	f.Add("  --0  [$0]\n    \x82")
	f.Fuzz(func(t *testing.T, help string) {
		rows, err := Parse(help)
		if err != nil {
			return
		}
		tables, err := ParseMarkdown(Markdown("t", rows))
		if err != nil {
			t.Fatalf("Markdown of %#v unreadable: %v", rows, err)
		}
		if len(tables) != 1 || !reflect.DeepEqual(tables[0].Rows, rows) && len(rows) > 0 {
			t.Fatalf("round trip:\n got %#v\nwant %#v", tables, rows)
		}
	})
}
