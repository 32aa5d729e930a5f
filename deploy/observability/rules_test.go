// Package observability_test checks the shipped Prometheus rules, the
// Prometheus example configuration and the Grafana dashboard: promtool
// checks and unit-tests the rules, every dashboard query parses as PromQL,
// and every metric the rules and the dashboard use is exported by the real
// servers (built and scraped here).
package observability_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/debpkg"
)

const (
	rulesFile     = "alerts.yml"
	rulesTestFile = "alerts_test.yml"
	configFile    = "prometheus.yml"
	dashboardFile = "keymesh-dashboard.json"
)

// promtool runs promtool with args and fails the test with its output when
// it does not succeed.
func promtool(t *testing.T, args ...string) string {
	t.Helper()
	bin := debpkg.Require(t, "promtool", "prometheus")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestRules runs promtool's own checks: the rules parse, the example
// configuration (which loads them) is valid, and the unit tests in
// alerts_test.yml pass.
func TestRules(t *testing.T) {
	promtool(t, "check", "rules", rulesFile)
	promtool(t, "check", "config", configFile)
	promtool(t, "test", "rules", rulesTestFile)
}

// TestEveryAlertTested wants, for every alert in alerts.yml, a unit test
// that expects it to fire and one that expects it not to (exp_alerts: []),
// so no alert ships that nobody has seen fire or stay quiet.
func TestEveryAlertTested(t *testing.T) {
	alerts := alertNames(t)
	if len(alerts) < 5 {
		t.Fatalf("found only %d alerts in %s: %v", len(alerts), rulesFile, alerts)
	}
	fires, quiet := alertTests(t)
	for _, a := range alerts {
		if !fires[a] {
			t.Errorf("alert %s has no unit test in %s that expects it to fire", a, rulesTestFile)
		}
		if !quiet[a] {
			t.Errorf("alert %s has no unit test in %s that expects it not to fire (exp_alerts: [])", a, rulesTestFile)
		}
	}
}

var alertRe = regexp.MustCompile(`^\s*-\s*alert:\s*(\S+)\s*$`)

// alertNames lists the alerts of the rules file.
func alertNames(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, l := range readLines(t, rulesFile) {
		if m := alertRe.FindStringSubmatch(l); m != nil {
			names = append(names, m[1])
		}
	}
	return names
}

// alertTests reads the alert_rule_test entries of the unit-test file: which
// alerts some test expects to fire, and which some test expects quiet.
func alertTests(t *testing.T) (fires, quiet map[string]bool) {
	t.Helper()
	fires, quiet = map[string]bool{}, map[string]bool{}
	lines := readLines(t, rulesTestFile)
	for i, l := range lines {
		name, ok := strings.CutPrefix(strings.TrimSpace(l), "alertname:")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		// The entry's exp_alerts follows within the next lines.
		for j := i + 1; j < len(lines) && j <= i+3; j++ {
			v, ok := strings.CutPrefix(strings.TrimSpace(lines[j]), "exp_alerts:")
			if !ok {
				continue
			}
			switch v = strings.TrimSpace(v); {
			case v == "[]":
				quiet[name] = true
			case v == "" && j+1 < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[j+1]), "- exp_labels:"):
				fires[name] = true
			}
			break
		}
	}
	return fires, quiet
}

func readLines(t *testing.T, name string) []string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// dashboard is the part of a Grafana dashboard these tests read.
type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s is not JSON: %v", dashboardFile, err)
	}
	return d
}

// dashboardExprs are the PromQL expressions of the dashboard's panels and
// template variables, keyed by where they are.
func dashboardExprs(t *testing.T, d dashboard) map[string]string {
	t.Helper()
	exprs := map[string]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs[fmt.Sprintf("panel %q target %s", p.Title, tg.RefID)] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		q, ok := v.Query.(map[string]any)
		if !ok {
			continue
		}
		s, _ := q["query"].(string)
		// label_values(<selector>, label): the selector is PromQL.
		if in, ok := strings.CutPrefix(s, "label_values("); ok {
			if i := strings.LastIndex(in, ","); i > 0 {
				exprs["variable "+v.Name] = in[:i]
			}
		}
	}
	return exprs
}

// TestDashboard checks the dashboard's shape (unique panel IDs, every panel
// on the datasource variable with at least one query, the region and
// instance variables used) and that every query is valid PromQL, by handing
// them to promtool as recording rules with Grafana's variables filled in.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard without uid or title")
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	for _, v := range []string{"datasource", "region", "instance"} {
		if !vars[v] {
			t.Errorf("dashboard has no %q variable", v)
		}
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the datasource variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %s has no expression", p.Title, tg.RefID)
			} else if strings.HasPrefix(tg.Expr, "keymesh") || strings.Contains(tg.Expr, "(keymesh_") {
				if !strings.Contains(tg.Expr, `region=~"$region"`) {
					t.Errorf("panel %q target %s ignores the region variable: %s", p.Title, tg.RefID, tg.Expr)
				}
			}
		}
	}

	exprs := dashboardExprs(t, d)
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	i := 0
	for _, e := range exprs {
		i++
		fmt.Fprintf(&b, "      - record: dashboard:expr_%d\n        expr: %s\n", i, strings.ReplaceAll(fmt.Sprintf("%q", grafanaVars(e)), `\u0026`, "&"))
	}
	f := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	promtool(t, "check", "rules", f)
}

// grafanaVars fills in the Grafana variables the dashboard uses, as Grafana
// would before it sends a query.
func grafanaVars(e string) string {
	return strings.NewReplacer("$__rate_interval", "5m", "$__range", "6h", "$region", ".*", "$instance", ".*").Replace(e)
}
