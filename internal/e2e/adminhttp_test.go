package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// startAdmin serves srv's admin endpoints on a free port and returns its base URL.
func startAdmin(t *testing.T, srv *proxy.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeAdmin(ln)
	return "http://" + ln.Addr().String()
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrape fetches /metrics and parses it with Prometheus' own text parser.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := httpGet(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// metric returns the value of the family's metric with the given labels (a
// counter, a gauge, or a histogram's count), and whether it exists.
func metric(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetricsAndHealth scrapes /metrics after known traffic and checks that the
// counters moved by exactly that traffic; /healthz follows the master.
func TestMetricsAndHealth(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, srv := startProxy(t, master, slaves...)
	base := startAdmin(t, srv)

	before := scrape(t, base)
	for _, name := range []string{"syncproxy_connected_clients", "syncproxy_backend_up", "syncproxy_slave_state",
		"syncproxy_slave_applied_seq", "syncproxy_sync_subscribed", "syncproxy_config_reloads_total", "syncproxy_master_switches_total", "go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := metric(before, name); !ok {
			t.Errorf("%s missing from /metrics", name)
		}
	}
	c := redistest.DialRaw(t, addr)
	for i := 0; i < 25; i++ {
		mustReply(t, c, "+OK\r\n", "SET", fmt.Sprintf("k%d", i), "v")
	}
	for i := 0; i < 10; i++ {
		c.Do("GET", fmt.Sprintf("k%d", i))
	}
	mustReply(t, c, "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", "LPUSH", "k1", "x")
	c.Do("NOSUCHCOMMAND")
	c.Do("SET", "syncproxy:x", "1") // refused by the proxy
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)

	m := scrape(t, base)
	delta := func(name string, labels ...string) float64 {
		a, _ := metric(before, name, labels...)
		b, _ := metric(m, name, labels...)
		return b - a
	}
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"syncproxy_commands_total", []string{"command", "set"}, 26},
		{"syncproxy_commands_total", []string{"command", "get"}, 10},
		{"syncproxy_commands_total", []string{"command", "lpush"}, 1},
		{"syncproxy_commands_total", []string{"command", "unknown"}, 1},
		{"syncproxy_command_duration_seconds", []string{"command", "set"}, 26},
		{"syncproxy_errors_total", []string{"kind", "WRONGTYPE"}, 1},
		{"syncproxy_errors_total", []string{"kind", "ERR"}, 1},
		{"syncproxy_errors_total", []string{"kind", "SYNCPROXY"}, 1},
		{"syncproxy_connections_total", nil, 1},
	}
	for _, ck := range checks {
		if got := delta(ck.name, ck.labels...); got != ck.want {
			t.Errorf("%s%v moved by %v, want %v", ck.name, ck.labels, got, ck.want)
		}
	}
	if v, _ := metric(m, "syncproxy_connected_clients"); v != 1 {
		t.Errorf("connected clients %v, want 1", v)
	}
	if d := delta("syncproxy_backend_requests_total", "backend", "master"); d < 1 {
		t.Errorf("master requests moved by %v", d)
	}
	if d := delta("syncproxy_backend_duration_seconds", "backend", "master"); d < 1 {
		t.Errorf("master latency observations moved by %v", d)
	}
	reads := delta("syncproxy_slave_reads_total", "slave", "slave-1") + delta("syncproxy_slave_reads_total", "slave", "slave-2") +
		delta("syncproxy_master_reads_total")
	if reads != 10 {
		t.Errorf("reads counted %v, want 10", reads)
	}
	latest, _ := metric(m, "syncproxy_sync_latest_seq")
	for _, s := range []string{"slave-1", "slave-2"} {
		if v, _ := metric(m, "syncproxy_slave_state", "slave", s, "state", "online"); v != 1 {
			t.Errorf("%s not online in metrics", s)
		}
		if v, _ := metric(m, "syncproxy_slave_applied_seq", "slave", s); v != latest || v == 0 {
			t.Errorf("%s applied %v, latest %v", s, v, latest)
		}
	}

	if err := srv.Reload(srv.Config()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if v, _ := metric(scrape(t, base), "syncproxy_config_reloads_total"); v != 1 {
		t.Errorf("reloads counted %v, want 1", v)
	}
	if code, body := httpGet(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	master.Stop(t)
	redistest.CheckFor(t, 10*time.Second, poll, func() error {
		if code, body := httpGet(t, base+"/healthz"); code != 503 || !strings.Contains(body, "master") {
			return fmt.Errorf("/healthz with the master down: %d %q", code, body)
		}
		return nil
	})
	m = scrape(t, base)
	if v, _ := metric(m, "syncproxy_backend_up", "backend", "master"); v != 0 {
		t.Errorf("master up %v while stopped", v)
	}
	master.Restart(t)
	redistest.CheckFor(t, 15*time.Second, poll, func() error {
		if code, body := httpGet(t, base+"/healthz"); code != 200 {
			return fmt.Errorf("/healthz after the master came back: %d %q", code, body)
		}
		return nil
	})
}

// TestStatusPage loads the status page in headless Chromium: it shows the master
// and every slave, and shows a slave going down.
func TestStatusPage(t *testing.T) {
	t.Parallel()
	browser := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			browser = p
			break
		}
	}
	if browser == "" {
		t.Skip("no chromium: `make deps` installs it (apt-get install chromium)")
	}
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	_, srv := startProxy(t, master, slaves...)
	base := startAdmin(t, srv)

	rowRe := regexp.MustCompile(`<tr id="row-([a-z0-9-]+)" class="state-([a-z-]+)">`)
	dom := func() map[string]string {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu",
			"--disable-dev-shm-usage", "--no-first-run", "--user-data-dir="+t.TempDir(),
			"--virtual-time-budget=3000", "--dump-dom", base+"/")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("chromium: %v", err)
		}
		rows := map[string]string{}
		for _, m := range rowRe.FindAllStringSubmatch(string(out), -1) {
			rows[m[1]] = m[2]
		}
		if len(rows) == 0 {
			t.Logf("page as loaded: %s", out)
		}
		return rows
	}
	rows := dom()
	want := map[string]string{"master": "up", "slave-1": "online", "slave-2": "online"}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Fatalf("status page shows %v, want %v", rows, want)
	}
	slaves[1].Stop(t)
	redistest.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		if rows := dom(); rows["slave-2"] != "down" || rows["slave-1"] != "online" || rows["master"] != "up" {
			return fmt.Errorf("after slave-2 stopped the page shows %v", rows)
		}
		return nil
	})
}
