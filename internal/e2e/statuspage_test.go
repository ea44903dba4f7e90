package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// chromium is the headless browser the status page is tested in.
const chromium = "/usr/bin/chromium"

// statusCharts are the charts the status page draws, one <svg> each.
var statusCharts = []string{"commands", "latency", "lag_messages", "lag_ms", "errors", "clients"}

// TestStatusPageCharts runs a proxy on real servers with traffic and a slave
// restarted, then loads the status page in headless Chromium: the screenshot is
// not blank and the DOM holds one SVG chart with data per series. With
// SYNCPROXY_STATUS_PNG set, the screenshot is saved there (docs/status.png).
func TestStatusPageCharts(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		t.Skip("chromium not installed")
	}
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, srv := startProxy(t, master, slaves...)
	base := startAdmin(t, srv)
	stop := startTraffic(t, addr)
	save := os.Getenv("SYNCPROXY_STATUS_PNG")
	before, after := 3, 8 // samples before the slave dies, in all
	if save != "" {
		before, after = 30, 90 // a longer run for the README's picture
	}

	// A slave that dies and comes back empty: a state change on the charts.
	waitSeries(t, base, func(s *proxy.Series) bool { return len(s.T) >= before })
	slaves[1].Kill(t)
	waitSeries(t, base, func(s *proxy.Series) bool { return hasEvent(s, "slave-2", "down") })
	slaves[1].Restart(t)
	waitSeries(t, base, func(s *proxy.Series) bool {
		n := len(s.T)
		return hasEvent(s, "slave-2", "online") && n >= after && s.Reads[n-1] > 0 && s.Writes[n-1] > 0 &&
			s.P99Ms[n-1] != nil && len(s.Slaves) == 2
	})

	dir := t.TempDir()
	shot := filepath.Join(dir, "status.png")
	runChromium(t, "--screenshot="+shot, base+"/")
	checkScreenshot(t, shot)
	if save != "" {
		b, _ := os.ReadFile(shot)
		if err := os.WriteFile(save, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dom := runChromium(t, "--dump-dom", base+"/")
	checkCharts(t, dom)
	stop()
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// startTraffic sends writes, reads and an error now and then until the
// returned function is called.
func startTraffic(t *testing.T, addr string) func() {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		c := redistest.DialRaw(t, addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				key := fmt.Sprintf("k%d:%d", w, i%500)
				c.Send("SET", key, fmt.Sprint(i))
				c.Send("GET", key)
				c.Send("GET", key)
				if i%50 == 0 {
					c.Send("LPUSH", key, "x") // WRONGTYPE
				}
				c.Flush()
				for n := 3 + boolInt(i%50 == 0); n > 0; n-- {
					if _, err := c.TryRead(); err != nil {
						return
					}
				}
				time.Sleep(2 * time.Millisecond) // a steady rate, not a flood on 2 cores
			}
		}()
	}
	var once sync.Once
	stop := func() { once.Do(func() { close(done); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// waitSeries polls /status.json until cond holds for its series.
func waitSeries(t *testing.T, base string, cond func(*proxy.Series) bool) {
	t.Helper()
	redistest.CheckFor(t, 2*time.Minute, 100*time.Millisecond, func() error {
		_, body := httpGet(t, base+"/status.json")
		var st proxy.Status
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			return err
		}
		if st.Series == nil || !cond(st.Series) {
			return fmt.Errorf("series not there yet: %.300s", body)
		}
		return nil
	})
}

func hasEvent(s *proxy.Series, slave, state string) bool {
	for _, e := range s.Events {
		if e.Slave == slave && e.State == state {
			return true
		}
	}
	return false
}

// runChromium loads url in headless Chromium with the given output flag and
// returns its stdout.
func runChromium(t *testing.T, output, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu",
		"--user-data-dir="+t.TempDir(), "--window-size=1200,1600", "--virtual-time-budget=5000", output, url)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", output, err, stderr.String())
	}
	return stdout.String()
}

// checkScreenshot checks that the PNG is the window's size and not one colour.
func checkScreenshot(t *testing.T, file string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 1000 || b.Dy() < 1000 {
		t.Fatalf("screenshot is %v", b)
	}
	if n := colours(img); n < 8 {
		t.Fatalf("screenshot has %d colours: blank", n)
	}
}

func colours(img image.Image) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
		}
	}
	return len(seen)
}

var (
	svgRe      = regexp.MustCompile(`(?s)<svg[^>]*\bid="chart-([a-z_]+)"[^>]*>(.*?)</svg>`)
	polylineRe = regexp.MustCompile(`<polyline[^>]*\bpoints="([^"]+)"`)
)

// checkCharts checks that the DOM has one SVG chart per series, each with a
// line of several points.
func checkCharts(t *testing.T, dom string) {
	t.Helper()
	found := map[string]int{}
	for _, m := range svgRe.FindAllStringSubmatch(dom, -1) {
		points := 0
		for _, pl := range polylineRe.FindAllStringSubmatch(m[2], -1) {
			points += len(strings.Fields(pl[1]))
		}
		found[m[1]]++
		if points < 3 {
			t.Errorf("chart %s has %d data points", m[1], points)
		}
	}
	for _, name := range statusCharts {
		if found[name] != 1 {
			t.Errorf("chart %s appears %d times in the DOM, want 1", name, found[name])
		}
	}
	if len(found) != len(statusCharts) {
		t.Errorf("charts in the DOM: %v, want %v", found, statusCharts)
	}
	if !strings.Contains(dom, `data-state="down"`) {
		t.Errorf("the slave's state change is not marked on the charts")
	}
}

// TestResyncProgress: a full resync counts the keys it copies of the master's,
// and INFO and /status.json show the figures.
func TestResyncProgress(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	master, slave := servers[0], servers[1]
	const keys = 3000
	for db := 0; db < 2; db++ {
		c := master.Dial(t)
		if _, err := c.Do("SELECT", db); err != nil {
			t.Fatal(err)
		}
		args := []interface{}{}
		for i := 0; i < keys/2; i++ {
			args = append(args, fmt.Sprintf("key:%d", i), i)
		}
		if _, err := c.Do("MSET", args...); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	addr, srv := startProxy(t, master, slave) // the empty slave is resynced in full
	c := redistest.DialRaw(t, addr)
	line, _ := infoField(c, "slave0")
	want := fmt.Sprintf(",resync_keys_copied=%d,resync_keys_total=%d", keys, keys)
	if !strings.Contains(line, want) {
		t.Errorf("INFO slave0:%s\nwant it to hold %s", line, want)
	}
	base := startAdmin(t, srv)
	_, body := httpGet(t, base+"/status.json")
	var st proxy.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if sl := st.Slaves[0]; sl.ResyncKeysCopied != keys || sl.ResyncKeysTotal != keys {
		t.Errorf("/status.json: resync %d of %d keys, want %d of %d", sl.ResyncKeysCopied, sl.ResyncKeysTotal, keys, keys)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slave)
}
