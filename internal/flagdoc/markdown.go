package flagdoc

import (
	"fmt"
	"strings"
)

// Table is one section of a flags document: a heading and its rows.
type Table struct {
	Title string
	Rows  []Row
}

// tableHead is the header and delimiter row of every flag table.
const tableHead = "| flag | environment variable | default | meaning |\n| --- | --- | --- | --- |\n"

// Markdown renders a "## title" section with one table row per flag. Flag,
// variable and default are code spans; an empty default is an empty cell.
// ParseMarkdown reads the result back into the same rows.
func Markdown(title string, rows []Row) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## %s\n\n", title)
	b.WriteString(tableHead)
	for _, r := range rows {
		flag := "--" + r.Flag
		if r.Arg != "" {
			flag += " " + r.Arg
		}
		def := ""
		if r.Default != "" {
			def = code(r.Default)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", code(flag), code(r.Env), def, escapeText(r.Meaning))
	}
	return b.String()
}

// code makes a code span, with "|" escaped as GitHub's tables need.
func code(s string) string {
	return "`" + strings.ReplaceAll(s, "|", `\|`) + "`"
}

// escapeText escapes a usage text for a table cell: outside its code spans
// (text between pairs of backticks) the characters Markdown or HTML would
// take as syntax; inside them only "|".
func escapeText(s string) string {
	parts := strings.Split(s, "`")
	balanced := len(parts)%2 == 1
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			if balanced {
				b.WriteByte('`')
			} else {
				b.WriteString("\\`")
			}
		}
		if balanced && i%2 == 1 {
			b.WriteString(strings.ReplaceAll(p, "|", `\|`))
			continue
		}
		for _, r := range p {
			switch r {
			case '\\', '|', '*':
				b.WriteByte('\\')
				b.WriteRune(r)
			case '<':
				b.WriteString("&lt;")
			case '>':
				b.WriteString("&gt;")
			case '&':
				b.WriteString("&amp;")
			default:
				b.WriteRune(r)
			}
		}
	}
	return b.String()
}
