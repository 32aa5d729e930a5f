package docs_test

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/keymesh/keymesh/"

// layerRow is one row of ARCHITECTURE.md's layer table.
type layerRow struct {
	layer    int
	side     string
	patterns []string // paths below the module; "x/..." is x and everything below it
}

// sideMay says which sides a package of each side may import.
var sideMay = map[string][]string{
	"shared": {"shared"},
	"peer":   {"shared", "peer"},
	"server": {"shared", "server"},
	"cli":    {"shared", "peer", "server", "test"},
	"test":   {"shared", "peer", "server", "test", "cli"},
	"tool":   {"shared", "peer", "server", "test", "cli", "tool"},
}

// readLayers parses the table under "## Layers" in ARCHITECTURE.md.
func readLayers(t *testing.T) []layerRow {
	t.Helper()
	b, err := os.ReadFile("../ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	_, text, ok := strings.Cut(string(b), "\n## Layers\n")
	if !ok {
		t.Fatal("ARCHITECTURE.md has no ## Layers section")
	}
	text, _, _ = strings.Cut(text, "\n## ")
	var rows []layerRow
	for _, line := range strings.Split(text, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) != 5 {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(cells[1]))
		if err != nil {
			continue // the header and its rule
		}
		side := strings.TrimSpace(cells[2])
		if _, ok := sideMay[side]; !ok {
			t.Fatalf("ARCHITECTURE.md: layer %d has unknown side %q", n, side)
		}
		r := layerRow{layer: n, side: side}
		for _, f := range strings.Fields(cells[3]) {
			r.patterns = append(r.patterns, strings.Trim(f, "`"))
		}
		rows = append(rows, r)
	}
	if len(rows) < 5 {
		t.Fatalf("ARCHITECTURE.md: %d layer rows; the table did not parse", len(rows))
	}
	return rows
}

// place finds the row of a package of this module.
func place(rows []layerRow, pkg string) (layerRow, bool) {
	rel := strings.TrimPrefix(pkg, module)
	for _, r := range rows {
		for _, p := range r.patterns {
			if base, ok := strings.CutSuffix(p, "/..."); ok && (rel == base || strings.HasPrefix(rel, base+"/")) {
				return r, true
			}
			if rel == p {
				return r, true
			}
		}
	}
	return layerRow{}, false
}

// TestArchitectureLayers checks every import of every package of the module
// (go list, tests aside) against ARCHITECTURE.md's layer table: an import
// goes to a lower layer (tools may import each other) and to a side the
// importer may use, and every package has a row.
func TestArchitectureLayers(t *testing.T) {
	rows := readLayers(t)
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkgs++
		src, ok := place(rows, f[0])
		if !ok {
			t.Errorf("%s is in no layer of ARCHITECTURE.md", f[0])
			continue
		}
		for _, imp := range f[1:] {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			dst, ok := place(rows, imp)
			if !ok {
				continue // reported as a package of its own
			}
			if dst.layer >= src.layer && !(src.side == "tool" && dst.layer == src.layer) {
				t.Errorf("%s (layer %d) imports %s (layer %d): imports go down", f[0], src.layer, imp, dst.layer)
			}
			if !strings.Contains(" "+strings.Join(sideMay[src.side], " ")+" ", " "+dst.side+" ") {
				t.Errorf("%s (%s) imports %s (%s): a %s package may import only %v", f[0], src.side, imp, dst.side, src.side, sideMay[src.side])
			}
		}
	}
	if pkgs < 20 {
		t.Fatalf("go list printed %d packages; want the whole module", pkgs)
	}
}

// TestArchitectureCatchesAnUpwardImport checks the rule itself on made-up
// imports: a peer package importing a server one, and a layer importing
// its own layer, are caught.
func TestArchitectureCatchesAnUpwardImport(t *testing.T) {
	rows := readLayers(t)
	node, _ := place(rows, module+"node")
	relay, _ := place(rows, module+"internal/relay")
	wire, _ := place(rows, module+"internal/wire")
	if node.side != "peer" || relay.side != "server" || node.layer != relay.layer {
		t.Fatalf("node %+v, relay %+v: want peer and server side by side", node, relay)
	}
	if wire.layer >= node.layer {
		t.Fatalf("wire (layer %d) is not below node (layer %d)", wire.layer, node.layer)
	}
	if _, ok := place(rows, module+"internal/nosuchpackage"); ok {
		t.Fatal("an unlisted package found a row")
	}
}
