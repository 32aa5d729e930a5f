package flagdoc

import "fmt"

// Diff lists, one line each, how the documented tables (doc) differ from
// what the binaries print (want): sections or flags missing from the doc,
// flags documented that no longer exist, and flags whose variable, argument,
// default or meaning differ. Order is not compared. No lines: they agree.
func Diff(want, doc []Table) []string {
	var out []string
	docByTitle := map[string]Table{}
	for _, t := range doc {
		if _, dup := docByTitle[t.Title]; dup {
			out = append(out, fmt.Sprintf("section %q is documented twice", t.Title))
		}
		docByTitle[t.Title] = t
	}
	wantTitles := map[string]bool{}
	for _, w := range want {
		wantTitles[w.Title] = true
		d, ok := docByTitle[w.Title]
		if !ok {
			out = append(out, fmt.Sprintf("section %q is missing (%d flags undocumented)", w.Title, len(w.Rows)))
			continue
		}
		out = append(out, diffRows(w.Title, w.Rows, d.Rows)...)
	}
	for _, d := range doc {
		if !wantTitles[d.Title] {
			out = append(out, fmt.Sprintf("section %q is documented but %s has no flags (or does not exist)", d.Title, d.Title))
		}
	}
	return out
}

func diffRows(title string, want, doc []Row) []string {
	var out []string
	docRows := map[string]Row{}
	for _, r := range doc {
		if _, dup := docRows[r.Flag]; dup {
			out = append(out, fmt.Sprintf("%s: --%s is documented twice", title, r.Flag))
		}
		docRows[r.Flag] = r
	}
	wantFlags := map[string]bool{}
	for _, w := range want {
		wantFlags[w.Flag] = true
		d, ok := docRows[w.Flag]
		if !ok {
			out = append(out, fmt.Sprintf("%s: --%s is not documented", title, w.Flag))
			continue
		}
		for _, f := range []struct{ what, want, doc string }{
			{"environment variable", w.Env, d.Env},
			{"argument name", w.Arg, d.Arg},
			{"default", w.Default, d.Default},
			{"meaning", w.Meaning, d.Meaning},
		} {
			if f.want != f.doc {
				out = append(out, fmt.Sprintf("%s: --%s: %s is %q but the doc says %q", title, w.Flag, f.what, f.want, f.doc))
			}
		}
	}
	for _, d := range doc {
		if !wantFlags[d.Flag] {
			out = append(out, fmt.Sprintf("%s: --%s is documented but %s has no such flag", title, d.Flag, title))
		}
	}
	return out
}
