package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// resetKeys writes numKeys keys in DB 0 and 10 in DB 3 through the proxy, waits
// for the slaves to hold them, and returns how many keys each slave holds.
func resetKeys(t *testing.T, addr string, master *redistest.Server, slaves ...*redistest.Server) int {
	t.Helper()
	writeKeys(t, addr)
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, "+OK\r\n", "SELECT", "3")
	for i := 0; i < 10; i++ {
		mustReply(t, c, "+OK\r\n", "SET", key(i), value(i))
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	return numKeys + 10
}

// startResetProxy starts a proxy with its admin listener, logging to logs too.
func startResetProxy(t *testing.T, mode string, logs *lockedBuffer, master *redistest.Server, slaves ...*redistest.Server) (string, string) {
	t.Helper()
	log := zerolog.New(zerolog.MultiLevelWriter(logs, zerolog.NewTestWriter(t))).With().Timestamp().Logger()
	addr, srv := serveProxy(t, log, func(c *proxy.Config) {
		c.OnMasterReset = mode
		c.HealthInterval = 100 * time.Millisecond
	}, master, slaves...)
	waitOnline(t, srv)
	return addr, startAdmin(t, srv)
}

// waitMetric polls /metrics until name has the value want.
func waitMetric(t *testing.T, base, name string, want float64) {
	t.Helper()
	redistest.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if v, _ := metric(scrape(t, base), name); v != want {
			return fmt.Errorf("%s = %v, want %v", name, v, want)
		}
		return nil
	})
}

// TestMasterResetResync: a master restarted empty empties the slaves to match it
// (--on-master-reset resync, the default), logged at error level with the keys
// each slave dropped, and counted in /metrics.
func TestMasterResetResync(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	var logs lockedBuffer
	addr, base := startResetProxy(t, "resync", &logs, master, slaves...)
	keys := resetKeys(t, addr, master, slaves...)

	master.Restart(t) // empty
	waitMetric(t, base, "syncproxy_master_reset_keys_dropped_total", float64(len(slaves)*keys))
	waitWritable(t, addr, 10*time.Second)
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	m := scrape(t, base)
	if v, _ := metric(m, "syncproxy_master_resets_total"); v != 1 {
		t.Errorf("master resets counted %v, want 1", v)
	}
	if v, _ := metric(m, "syncproxy_master_reset_held"); v != 0 {
		t.Errorf("held %v in resync mode", v)
	}
	lines := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"level":"error"`) && strings.Contains(line, "master reset") &&
			strings.Contains(line, fmt.Sprintf(`"keys_dropped":%d`, keys)) &&
			strings.Contains(line, fmt.Sprintf(`"keys_dropped_per_db":"db0=%d,db3=10"`, numKeys)) {
			lines++
		}
	}
	if lines != len(slaves) {
		t.Errorf("%d error lines about the reset with the keys dropped, want one per slave:\n%s", lines, logs.String())
	}
}

// TestMasterResetHold: with --on-master-reset hold, a master restarted empty
// leaves the slaves' data alone: reads are served from it, writes of every kind
// are refused until SYNCPROXY MASTER-RESET CONFIRM; then the slaves resync to
// the master and writes work again.
func TestMasterResetHold(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	var logs lockedBuffer
	addr, base := startResetProxy(t, "hold", &logs, master, slaves...)
	keys := resetKeys(t, addr, master, slaves...)
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, "-ERR syncproxy: no master reset is held\r\n", "SYNCPROXY", "MASTER-RESET", "CONFIRM")
	// A transaction queued before the reset is refused at EXEC, after it.
	mustReply(t, c, "+OK\r\n", "MULTI")
	mustReply(t, c, "+QUEUED\r\n", "SET", "queued", "before")

	master.Restart(t) // empty
	waitMetric(t, base, "syncproxy_master_reset_held", 1)
	r := redistest.DialRaw(t, addr)
	checkReads(t, addr, "master reset held")
	held := "-" + "READONLY syncproxy: the master was reset (it lost the slaves' data); " +
		"writes are held until an operator confirms with SYNCPROXY MASTER-RESET CONFIRM\r\n"
	mustReply(t, r, held, "SET", "k", "v")
	mustReply(t, c, "-EXECABORT Transaction discarded because of: "+held[1:], "EXEC")
	mustReply(t, r, held, "EVAL", "return 1", "0")
	mustReply(t, r, held, "BLPOP", "l", "0")
	mustReply(t, r, "+OK\r\n", "MULTI")
	mustReply(t, r, "+QUEUED\r\n", "GET", key(1))
	mustReply(t, r, held, "INCR", "n")
	mustReply(t, r, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC")
	mustReply(t, r, string(bulk(value(2))), "GET", key(2))
	if v, _ := metric(scrape(t, base), "syncproxy_master_reset_keys_dropped_total"); v != 0 {
		t.Errorf("keys dropped %v during the hold", v)
	}
	for _, s := range slaves {
		if n := s.Do(t, "DBSIZE"); n != int64(numKeys+2) { // + syncproxy:applied and syncproxy:lease
			t.Fatalf("slave %s holds %v keys in DB 0 during the hold", s.Addr, n)
		}
	}

	mustReply(t, r, "+OK\r\n", "SYNCPROXY", "MASTER-RESET", "CONFIRM")
	waitWritable(t, addr, 10*time.Second)
	mustReply(t, r, "+OK\r\n", "SET", "after", "confirm")
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	m := scrape(t, base)
	if v, _ := metric(m, "syncproxy_master_resets_total"); v != 1 {
		t.Errorf("master resets counted %v, want 1", v)
	}
	if v, _ := metric(m, "syncproxy_master_reset_keys_dropped_total"); v != float64(len(slaves)*keys) {
		t.Errorf("keys dropped %v, want %d", v, len(slaves)*keys)
	}
	if v, _ := metric(m, "syncproxy_master_reset_held"); v != 0 {
		t.Errorf("still held after the confirmation")
	}
	resp, err := http.Post(base+"/master-reset/confirm", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("POST /master-reset/confirm with nothing held: %d", resp.StatusCode)
	}
	if !strings.Contains(logs.String(), "writes are held until an operator confirms") {
		t.Errorf("the hold is not logged:\n%s", logs.String())
	}
}

// TestAdminConfirmAuth: POST /master-reset/confirm asks what SYNCPROXY
// MASTER-RESET CONFIRM asks of a client — with requirepass, the password of the
// default user or of a read-write user (HTTP Basic auth) — and refuses a
// browser's cross-site request. 409 (nothing held) means it was let through.
func TestAdminConfirmAuth(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	_, open := startProxy(t, servers[0], servers[1])
	_, locked := startProxyWith(t, func(c *proxy.Config) {
		c.RequirePass = "s3cret"
		c.Users = []proxy.User{
			{Name: "writer", Password: "wpass", Access: proxy.AccessReadWrite},
			{Name: "reader", Password: "rpass", Access: proxy.AccessReadOnly},
		}
	}, servers[0], servers[1])
	openBase, lockedBase := startAdmin(t, open), startAdmin(t, locked)
	cases := []struct {
		name, base, user, pass string
		header                 [2]string
		want                   int
	}{
		{"no password configured", openBase, "", "", [2]string{}, http.StatusConflict},
		{"no password, cross-site", openBase, "", "", [2]string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"no password, other origin", openBase, "", "", [2]string{"Origin", "http://evil.example"}, http.StatusForbidden},
		{"no credentials", lockedBase, "", "", [2]string{}, http.StatusUnauthorized},
		{"wrong password", lockedBase, "default", "nope", [2]string{}, http.StatusUnauthorized},
		{"unknown user", lockedBase, "nobody", "wpass", [2]string{}, http.StatusUnauthorized},
		{"read-only user", lockedBase, "reader", "rpass", [2]string{}, http.StatusForbidden},
		{"requirepass", lockedBase, "default", "s3cret", [2]string{}, http.StatusConflict},
		{"requirepass, empty user name", lockedBase, "", "s3cret", [2]string{}, http.StatusConflict},
		{"read-write user", lockedBase, "writer", "wpass", [2]string{}, http.StatusConflict},
		{"read-write user, cross-site", lockedBase, "writer", "wpass", [2]string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"read-write user, same origin", lockedBase, "writer", "wpass", [2]string{"Sec-Fetch-Site", "same-origin"}, http.StatusConflict},
	}
	client := http.Client{Timeout: 5 * time.Second}
	for _, tc := range cases {
		req, err := http.NewRequest(http.MethodPost, tc.base+"/master-reset/confirm", nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.user != "" || tc.pass != "" {
			req.SetBasicAuth(tc.user, tc.pass)
		}
		if tc.header[0] != "" {
			req.Header.Set(tc.header[0], tc.header[1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
		if tc.want == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
			t.Errorf("%s: no WWW-Authenticate: Basic", tc.name)
		}
	}
}
