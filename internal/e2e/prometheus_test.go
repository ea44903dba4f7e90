package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// Bounds of the Prometheus end-to-end test.
const (
	promStartTimeout = 15 * time.Second // from exec to /-/ready
	promAlertTimeout = 20 * time.Second // from the slave's stop to the alert firing
	promStopTimeout  = 10 * time.Second // from SIGTERM to exit, then SIGKILL
	slaveDownAlert   = "SyncproxySlaveOutOfReadSet"
)

// promServer is a Prometheus server run by a test.
type promServer struct {
	base string // http://127.0.0.1:PORT
	out  *lockedBuffer
}

// startPrometheus runs a Prometheus server that scrapes target's /metrics every
// second and evaluates rules (a file) every second, its data in a temporary
// directory; t.Cleanup stops it. A free port taken by someone else before
// Prometheus binds it is retried.
func startPrometheus(t *testing.T, target, rules string) *promServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (apt-get install prometheus)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "prometheus.yml")
	err = os.WriteFile(conf, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: syncproxy
    static_configs:
      - targets: [%q]
`, rules, target)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		p, err := execPrometheus(t, bin, conf, filepath.Join(dir, fmt.Sprintf("data%d", attempt)))
		if err == nil {
			return p
		}
		if attempt == 2 {
			t.Fatal(err)
		}
		t.Logf("prometheus did not start, again: %v", err)
	}
}

// execPrometheus starts Prometheus on a free port and waits until it is ready.
func execPrometheus(t *testing.T, bin, conf, data string) (*promServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	p := &promServer{base: "http://" + addr, out: &lockedBuffer{}}
	cmd := exec.Command(bin, "--config.file="+conf, "--storage.tsdb.path="+data,
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(promStopTimeout):
			cmd.Process.Kill()
			<-exited
		}
	}
	deadline := time.Now().Add(promStartTimeout)
	for {
		select {
		case <-exited:
			return nil, fmt.Errorf("prometheus exited: %s", p.out)
		case <-time.After(50 * time.Millisecond):
		}
		if resp, err := http.Get(p.base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Cleanup(stop)
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("prometheus not ready within %v: %s", promStartTimeout, p.out)
		}
	}
}

// api gets a Prometheus HTTP API path and decodes its data into v.
func (p *promServer) api(path string, v any) error {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(p.base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: %s %s", path, r.Status, r.Error)
	}
	return json.Unmarshal(r.Data, v)
}

// promAlert is an alert of /api/v1/alerts.
type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"` // pending, firing
}

// alerts returns the alerts named name, pending or firing.
func (p *promServer) alerts(name string) ([]promAlert, error) {
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	if err := p.api("/api/v1/alerts", &data); err != nil {
		return nil, err
	}
	var out []promAlert
	for _, a := range data.Alerts {
		if a.Labels["alertname"] == name {
			out = append(out, a)
		}
	}
	return out, nil
}

// query runs an instant query and returns its vector's samples' labels.
func (p *promServer) query(q string) ([]map[string]string, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
		} `json:"result"`
	}
	if err := p.api("/api/v1/query?query="+url.QueryEscape(q), &data); err != nil {
		return nil, err
	}
	out := make([]map[string]string, len(data.Result))
	for i, r := range data.Result {
		out[i] = r.Metric
	}
	return out, nil
}

// ruleEvaluated returns when the rule alert was last evaluated.
func (p *promServer) ruleEvaluated(alert string) (time.Time, error) {
	var data struct {
		Groups []struct {
			Rules []struct {
				Name           string    `json:"name"`
				Health         string    `json:"health"`
				LastError      string    `json:"lastError"`
				LastEvaluation time.Time `json:"lastEvaluation"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := p.api("/api/v1/rules", &data); err != nil {
		return time.Time{}, err
	}
	for _, g := range data.Groups {
		for _, r := range g.Rules {
			if r.Name == alert {
				if r.Health == "err" {
					return time.Time{}, fmt.Errorf("rule %s: %s", alert, r.LastError)
				}
				return r.LastEvaluation, nil
			}
		}
	}
	return time.Time{}, fmt.Errorf("rule %s not loaded", alert)
}

// testRules writes a copy of the alert rules with alert's for: set to forDur and
// returns its path.
func testRules(t *testing.T, alert, forDur string) string {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if !setFor(&doc, alert, forDur) {
		t.Fatalf("%s: no alert %s with a for:", rulesFile, alert)
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "rules.yml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// setFor sets the for: of the rule of n named alert, and reports whether it found it.
func setFor(n *yaml.Node, alert, forDur string) bool {
	if n.Kind == yaml.MappingNode {
		isAlert := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "alert" && n.Content[i+1].Value == alert {
				isAlert = true
			}
		}
		for i := 0; isAlert && i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "for" {
				n.Content[i+1].Value = forDur
				return true
			}
		}
	}
	for _, c := range n.Content {
		if setFor(c, alert, forDur) {
			return true
		}
	}
	return false
}

// TestPrometheusAlertSlaveDown runs a real Prometheus server with the alert rules
// (the slave alert's for: cut to 1s) against the proxy's /metrics: nothing fires
// while the slaves are online; stopping a slave fires SyncproxySlaveOutOfReadSet
// for it and only it. The dashboard's queries run on the same server.
func TestPrometheusAlertSlaveDown(t *testing.T) {
	t.Parallel()
	rules := testRules(t, slaveDownAlert, "1s")
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, srv := startProxy(t, master, slaves...)
	base := startAdmin(t, srv)
	prom := startPrometheus(t, strings.TrimPrefix(base, "http://"), rules)

	// Healthy: the rule evaluated on both slaves online, and no alert.
	var scraped time.Time
	redistest.CheckFor(t, promAlertTimeout, 100*time.Millisecond, func() error {
		online, err := prom.query(`syncproxy_slave_state{state="online"} == 1`)
		if err != nil || len(online) != len(slaves) {
			return fmt.Errorf("online slaves in Prometheus: %v %v; prometheus: %s", online, err, prom.out)
		}
		if scraped.IsZero() {
			scraped = time.Now()
		}
		last, err := prom.ruleEvaluated(slaveDownAlert)
		if err != nil || !last.After(scraped.Add(time.Second)) {
			return fmt.Errorf("rule last evaluated %v (%v), want after %v", last, err, scraped)
		}
		return nil
	})
	if got, err := prom.alerts(slaveDownAlert); err != nil || len(got) != 0 {
		t.Fatalf("slaves online: alerts %+v %v, want none", got, err)
	}

	stopped := slaves[1]
	name := ""
	for _, a := range srv.Replicator().Appliers() {
		if a.Addr() == stopped.Addr {
			name = a.Name()
		}
	}
	stopped.Stop(t)
	redistest.CheckFor(t, promAlertTimeout, 100*time.Millisecond, func() error {
		got, err := prom.alerts(slaveDownAlert)
		if err != nil {
			return err
		}
		if len(got) != 1 || got[0].Labels["slave"] != name || got[0].State != "firing" {
			return fmt.Errorf("alerts %+v, want %s firing for slave %s only", got, slaveDownAlert, name)
		}
		return nil
	})

	checkDashboardQueries(t, prom)
	c := redistest.DialRaw(t, addr)
	for i := 0; i < 20; i++ {
		mustReply(t, c, "+OK\r\n", "SET", fmt.Sprintf("k%d", i), "v")
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves[0])
}

// checkDashboardQueries runs every query of the dashboard on prom, Grafana's
// variables replaced, and fails the test on a query Prometheus refuses.
func checkDashboardQueries(t *testing.T, prom *promServer) {
	t.Helper()
	vars := strings.NewReplacer("$__rate_interval", "5s", "$instance", ".*")
	for what, expr := range dashboardExprs(t, readDashboard(t)) {
		if strings.HasPrefix(expr, "label_values(") {
			continue // a Grafana function, not PromQL
		}
		var data json.RawMessage
		err := prom.api("/api/v1/query?query="+url.QueryEscape(vars.Replace(expr)), &data)
		if err != nil {
			t.Errorf("dashboard %s: %q: %v", what, expr, err)
		}
	}
}
