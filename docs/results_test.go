package docs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/keymesh/keymesh/loadtest/results"
)

// resultsMarker opens a README block that must equal a recorded result:
// <!-- results: docs/results/NAME --> ... <!-- /results -->.
var resultsMarker = regexp.MustCompile(`^<!-- results: (\S+) -->$`)

const resultsEnd = "<!-- /results -->"

// TestReadmeResults checks that every table the README marks as a recorded
// result is, verbatim, the Markdown its command printed (docs/results/NAME.md),
// that the ```sh block above it holds the command line NAME.json records, and
// that no recorded result is left out of the README. With
// KEYMESH_UPDATE_DOCS=1 it rewrites the README's blocks from the .md files
// (the command lines it never rewrites).
func TestReadmeResults(t *testing.T) {
	readme := filepath.Join("..", "README.md")
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	update := os.Getenv("KEYMESH_UPDATE_DOCS") != ""
	out, problems := checkReadmeResults(string(b), "..", update)
	for _, p := range problems {
		t.Error(p)
	}
	if update && out != string(b) {
		if err := os.WriteFile(readme, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReadmeResultsCatches proves the check fails on a table that differs
// from its record, on a command line that is not the recorded one, on an
// unterminated block and on a recorded result the README leaves out.
func TestReadmeResultsCatches(t *testing.T) {
	root := t.TempDir()
	args := []string{"faults", "--runs", "5", "--record", "docs/results/faults"}
	if err := results.Write(filepath.Join(root, "docs", "results", "faults"), args, 1, "| a |\n| - |\n| 1 |"); err != nil {
		t.Fatal(err)
	}
	if err := results.Write(filepath.Join(root, "docs", "results", "orphan"), []string{"x"}, 1, "y"); err != nil {
		t.Fatal(err)
	}
	good := "```sh\ngo run ./loadtest faults --runs 5 --record docs/results/faults\n```\n\n<!-- results: docs/results/faults -->\n\n| a |\n| - |\n| 1 |\n\n<!-- /results -->\n"
	_, problems := checkReadmeResults(good, root, false)
	if len(problems) != 1 || !strings.Contains(problems[0], "orphan") {
		t.Fatalf("good README: want only the orphan reported, got %q", problems)
	}
	for name, readme := range map[string]string{
		"edited table":  strings.Replace(good, "| 1 |", "| 2 |", 1),
		"other command": strings.Replace(good, "--runs 5", "--runs 1", 1),
		"no end":        strings.Replace(good, "<!-- /results -->", "", 1),
	} {
		_, problems := checkReadmeResults(readme, root, false)
		if len(problems) < 2 {
			t.Errorf("%s: want a problem beside the orphan, got %q", name, problems)
		}
	}
	fixed, _ := checkReadmeResults(strings.Replace(good, "| 1 |", "| 2 |", 1), root, true)
	if fixed != good {
		t.Errorf("update did not restore the recorded table:\n%s", fixed)
	}
}

// checkReadmeResults checks readme's result blocks against the records under
// root and returns the README with every block copied from its record.
func checkReadmeResults(readme, root string, update bool) (string, []string) {
	lines := strings.Split(readme, "\n")
	var out, problems []string
	seen := map[string]bool{}
	lastSh := []string(nil) // the most recent ```sh block's lines
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if strings.HasPrefix(line, "```sh") {
			j := i + 1
			for j < len(lines) && !strings.HasPrefix(lines[j], "```") {
				j++
			}
			lastSh = lines[i+1 : min(j, len(lines))]
			out = append(out, lines[i:min(j+1, len(lines))]...)
			i = j
			continue
		}
		m := resultsMarker.FindStringSubmatch(line)
		if m == nil {
			out = append(out, line)
			continue
		}
		prefix := m[1]
		seen[filepath.Clean(prefix)] = true
		end := i + 1
		for end < len(lines) && lines[end] != resultsEnd {
			end++
		}
		if end == len(lines) {
			problems = append(problems, fmt.Sprintf("README line %d: %q has no %q after it", i+1, line, resultsEnd))
			out = append(out, lines[i:]...)
			break
		}
		rec, md, err := results.Read(filepath.Join(root, prefix))
		if err != nil {
			problems = append(problems, fmt.Sprintf("README line %d: %v", i+1, err))
			out = append(out, lines[i:end+1]...)
			i = end
			continue
		}
		if !hasCommand(lastSh, rec.Meta.Command) {
			problems = append(problems, fmt.Sprintf("README line %d: the ```sh block above %s does not hold its command line %q (recorded %s on %s)",
				i+1, prefix, rec.Meta.Command, rec.Meta.Date.Format("2006-01-02"), rec.Meta.CPUModel))
		}
		got := strings.TrimSpace(strings.Join(lines[i+1:end], "\n"))
		want := strings.TrimSpace(md)
		if got != want && !update {
			problems = append(problems, fmt.Sprintf("README line %d: the block for %s differs from %s.md (KEYMESH_UPDATE_DOCS=1 go test ./docs -run TestReadmeResults copies it):\nREADME:\n%s\nrecorded:\n%s",
				i+1, prefix, prefix, got, want))
		}
		out = append(out, line, "", want, "", resultsEnd)
		i = end
		lastSh = nil
	}
	recorded, _ := filepath.Glob(filepath.Join(root, "docs", "results", "*.json"))
	for _, r := range recorded {
		rel, _ := filepath.Rel(root, strings.TrimSuffix(r, ".json"))
		if !seen[filepath.Clean(rel)] {
			problems = append(problems, fmt.Sprintf("%s.json is recorded but the README shows it nowhere (add a <!-- results: %s --> block or delete it)", rel, rel))
		}
	}
	return strings.Join(out, "\n"), problems
}

// hasCommand reports whether a ```sh block holds cmd as one of its lines,
// alone or after "sudo ".
func hasCommand(block []string, cmd string) bool {
	for _, l := range block {
		l = strings.TrimSpace(l)
		if l == cmd || l == "sudo "+cmd {
			return true
		}
	}
	return false
}
