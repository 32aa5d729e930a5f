package flagdoc

import (
	"fmt"
	"strings"
)

// ParseMarkdown reads back the flag tables of a document made of Markdown
// sections: every "## title" followed by a table with the columns Markdown
// writes. Other text is ignored; a heading with no table has no rows.
func ParseMarkdown(doc string) ([]Table, error) {
	var tables []Table
	var cur *Table
	inTable := false
	for i, line := range strings.Split(strings.ReplaceAll(doc, "\r\n", "\n"), "\n") {
		if title, ok := strings.CutPrefix(line, "## "); ok {
			tables = append(tables, Table{Title: strings.TrimSpace(title)})
			cur, inTable = &tables[len(tables)-1], false
			continue
		}
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		if cur == nil {
			return nil, fmt.Errorf("line %d: a table before any \"## \" heading: %w", i+1, ErrTable)
		}
		cells := splitRow(line)
		if len(cells) != 4 {
			return nil, fmt.Errorf("line %d: %d cells, want 4 (flag, environment variable, default, meaning): %w", i+1, len(cells), ErrTable)
		}
		if !inTable {
			if cells[0] == "flag" || strings.HasPrefix(cells[0], "---") {
				if strings.HasPrefix(cells[0], "---") {
					inTable = true
				}
				continue
			}
			return nil, fmt.Errorf("line %d: a table row before the header: %w", i+1, ErrTable)
		}
		r, err := parseCells(cells)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		cur.Rows = append(cur.Rows, r)
	}
	return tables, nil
}

func parseCells(cells []string) (Row, error) {
	flag, ok := uncode(cells[0])
	if !ok || !strings.HasPrefix(flag, "--") {
		return Row{}, fmt.Errorf("flag cell %q: want `--name` or `--name arg`: %w", cells[0], ErrTable)
	}
	name, arg, _ := strings.Cut(flag[2:], " ")
	env, ok := uncode(cells[1])
	if !ok {
		return Row{}, fmt.Errorf("variable cell %q: want `KEYMESH_NAME`: %w", cells[1], ErrTable)
	}
	def := ""
	if cells[2] != "" {
		if def, ok = uncode(cells[2]); !ok {
			return Row{}, fmt.Errorf("default cell %q: want a code span or nothing: %w", cells[2], ErrTable)
		}
	}
	return Row{Flag: name, Arg: arg, Env: env, Default: def, Meaning: unescapeText(cells[3])}, nil
}

// splitRow splits "| a | b |" at the pipes that are neither escaped nor
// in a code span, and trims each cell. Escapes stay for the cell readers.
func splitRow(line string) []string {
	line = strings.TrimPrefix(strings.TrimSpace(line), "|")
	var cells []string
	var cell strings.Builder
	inCode := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\' && i+1 < len(line) && (!inCode || line[i+1] == '|'):
			cell.WriteByte(c)
			cell.WriteByte(line[i+1])
			i++
		case c == '`':
			inCode = !inCode
			cell.WriteByte(c)
		case c == '|' && !inCode:
			cells = append(cells, strings.TrimSpace(cell.String()))
			cell.Reset()
		default:
			cell.WriteByte(c)
		}
	}
	if rest := strings.TrimSpace(cell.String()); rest != "" {
		cells = append(cells, rest) // a row without the closing pipe
	}
	return cells
}

// uncode reads a code span made by code.
func uncode(cell string) (string, bool) {
	if len(cell) < 2 || cell[0] != '`' || cell[len(cell)-1] != '`' {
		return "", false
	}
	inner := cell[1 : len(cell)-1]
	if strings.Contains(inner, "`") {
		return "", false
	}
	return strings.ReplaceAll(inner, `\|`, "|"), true
}

// entities are the character references escapeText writes.
var entities = []struct {
	name string
	char byte
}{{"&lt;", '<'}, {"&gt;", '>'}, {"&amp;", '&'}}

// unescapeText undoes escapeText.
func unescapeText(s string) string {
	var b strings.Builder
	inCode := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '`':
			inCode = !inCode
			b.WriteByte(c)
		case inCode:
			if c == '\\' && i+1 < len(s) && s[i+1] == '|' {
				i++
				c = '|'
			}
			b.WriteByte(c)
		case c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		case c == '&':
			for _, e := range entities {
				if strings.HasPrefix(s[i:], e.name) {
					c = e.char
					i += len(e.name) - 1
					break
				}
			}
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
