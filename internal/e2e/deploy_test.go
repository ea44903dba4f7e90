package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// The files of deploy/, from this package's directory.
var (
	rulesFile     = filepath.Join("..", "..", "deploy", "prometheus", "syncproxy-rules.yml")
	rulesTestFile = filepath.Join("..", "..", "deploy", "prometheus", "syncproxy-rules_test.yml")
	dashboardFile = filepath.Join("..", "..", "deploy", "grafana", "syncproxy.json")
)

// alertRule is one rule of a Prometheus rule file.
type alertRule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// ruleFile is a Prometheus rule file.
type ruleFile struct {
	Groups []struct {
		Name  string      `yaml:"name"`
		Rules []alertRule `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) []alertRule {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	var rules []alertRule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s: no rules", rulesFile)
	}
	return rules
}

// promtool returns promtool's path, or skips the test when it is not installed
// (make test installs it: Debian's prometheus package).
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (apt-get install prometheus)")
	}
	return path
}

// TestAlertRulesPromtool checks the alert rules with promtool and runs their unit
// tests (deploy/prometheus/syncproxy-rules_test.yml).
func TestAlertRulesPromtool(t *testing.T) {
	t.Parallel()
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", filepath.Base(rulesFile)},
		{"test", "rules", filepath.Base(rulesTestFile)},
	} {
		c := exec.Command(bin, args...)
		c.Dir = filepath.Dir(rulesFile)
		out, err := c.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestAlertRulesShape checks that every alert has a for:, a severity label and
// summary and description annotations, and that every alert is unit tested.
func TestAlertRulesShape(t *testing.T) {
	t.Parallel()
	tests, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range readRules(t) {
		if r.Alert == "" {
			continue
		}
		if r.For == "" {
			t.Errorf("alert %s has no for:", r.Alert)
		}
		if s := r.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("alert %s: severity %q, want warning or critical", r.Alert, s)
		}
		for _, a := range []string{"summary", "description"} {
			if r.Annotations[a] == "" {
				t.Errorf("alert %s has no %s annotation", r.Alert, a)
			}
		}
		if n := strings.Count(string(tests), "alertname: "+r.Alert+"\n"); n < 2 {
			t.Errorf("alert %s: %d evaluations in %s, want one where it fires and one where it does not", r.Alert, n, rulesTestFile)
		}
	}
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	SchemaVersion int     `json:"schemaVersion"`
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

// panel is a dashboard panel: its queries and data source.
type panel struct {
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// dashboardExprs returns the dashboard's queries, titled, with its variables'.
func dashboardExprs(t *testing.T, d dashboard) map[string]string {
	t.Helper()
	exprs := map[string]string{}
	for _, p := range d.Panels {
		for i, tg := range p.Targets {
			exprs[fmt.Sprintf("panel %q query %d", p.Title, i)] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			exprs["variable "+v.Name] = v.Definition
		}
	}
	return exprs
}

// TestDashboardShape checks what makes the dashboard importable anywhere: a
// schema version, a Prometheus data source variable every panel uses, queries.
func TestDashboardShape(t *testing.T) {
	t.Parallel()
	d := readDashboard(t)
	if d.SchemaVersion < 36 || d.UID == "" || d.Title == "" {
		t.Errorf("schemaVersion %d, uid %q, title %q", d.SchemaVersion, d.UID, d.Title)
	}
	hasDS := false
	for _, v := range d.Templating.List {
		if v.Type == "datasource" && v.Name == "datasource" && string(v.Query) == `"prometheus"` {
			hasDS = true
		}
	}
	if !hasDS {
		t.Error("no Prometheus data source variable named datasource")
	}
	if len(d.Panels) < 8 {
		t.Errorf("%d panels, want at least 8", len(d.Panels))
	}
	for _, p := range d.Panels {
		if p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: data source %+v, want the variable", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
}

// metricName matches the proxy's metric names in a PromQL expression.
var metricName = regexp.MustCompile(`\bsyncproxy_[a-zA-Z0-9_]+`)

// exportedName reports whether name is a family of fams or a histogram family's
// _bucket, _sum or _count series.
func exportedName(fams map[string]*dto.MetricFamily, name string) bool {
	if fams[name] != nil {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if f := fams[strings.TrimSuffix(name, suffix)]; strings.HasSuffix(name, suffix) && f != nil &&
			f.GetType() == dto.MetricType_HISTOGRAM {
			return true
		}
	}
	return false
}

// TestDeployMetricNames checks that every query of the alert rules and of the
// dashboard is on metrics a real proxy exports: /metrics scraped after traffic
// (commands, an error reply) through a proxy on real redis-servers.
func TestDeployMetricNames(t *testing.T) {
	t.Parallel()
	exprs := dashboardExprs(t, readDashboard(t))
	for _, r := range readRules(t) {
		exprs["rule "+r.Alert+r.Record] = r.Expr
	}

	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, srv := startProxy(t, master, slaves...)
	base := startAdmin(t, srv)
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, "+OK\r\n", "SET", "k", "v")
	mustReply(t, c, "$1\r\nv\r\n", "GET", "k")
	mustReply(t, c, "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", "LPUSH", "k", "x")
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	fams := scrape(t, base)

	keys := make([]string, 0, len(exprs))
	for k := range exprs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		names := metricName.FindAllString(exprs[k], -1)
		if len(names) == 0 {
			t.Errorf("%s: no syncproxy metric in %q", k, exprs[k])
		}
		for _, name := range names {
			if !exportedName(fams, name) {
				t.Errorf("%s: %s is not exported on /metrics", k, name)
			}
		}
	}
}
