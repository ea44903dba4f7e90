package check_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/replicate/check"
)

// binKey is a key with NUL, CR, LF and invalid UTF-8 in it.
const binKey = "bin\x00\xff\r\nkey"

// populate writes the same data set to every server: every type, expiries, several
// DBs, a binary key. Absolute expiries are the same everywhere.
func populate(t *testing.T, servers ...*redistest.Server) {
	t.Helper()
	exp := time.Now().Add(time.Hour).UnixMilli()
	set := []interface{}{"SADD", "set"}
	hash := []interface{}{"HSET", "hash"}
	for i := 0; i < 300; i++ { // beyond the listpack/intset limits: order depends on the server
		set = append(set, fmt.Sprintf("member-%d", i))
		hash = append(hash, fmt.Sprintf("field-%d", i), i)
	}
	cmds := [][]interface{}{
		{"SELECT", 0},
		{"SET", "str", "hello"},
		{"SET", "int", 12345},
		{"SET", binKey, "bin\x00value"},
		{"RPUSH", "list", "a", "b", "c"},
		set,
		{"SADD", "small-set", 1, 2, 3},
		hash,
		{"ZADD", "zset", 1, "a", 2, "b", 2.5, "c"},
		{"XADD", "stream", "1-1", "f", "v"},
		{"XADD", "stream", "2-1", "f2", "v2"},
		{"XGROUP", "CREATE", "stream", "group", "0"},
		{"SET", "ttl", "v", "PXAT", exp},
		{"SET", "persist", "v", "PXAT", exp},
		{"SET", "typed", "v"},
		{"HSET", "gone", "f", "v"},
		{"SELECT", 3},
		{"RPUSH", "l3", "x", "y", "z"},
		{"SET", "s3", "v", "PXAT", exp},
		{"SELECT", 15},
		{"SET", "last", "v"},
	}
	for _, s := range servers {
		c := s.Dial(t)
		for _, cmd := range cmds {
			if _, err := c.Do(cmd[0].(string), cmd[1:]...); err != nil {
				t.Fatalf("%s %v: %v", s.Addr, cmd, err)
			}
		}
		c.Close()
	}
}

// plant makes slave differ from the master in each possible way, once per key,
// and returns the expected differences as "db/key/kind".
func plant(t *testing.T, slave *redistest.Server) []string {
	t.Helper()
	later := time.Now().Add(2 * time.Hour).UnixMilli()
	c := slave.Dial(t)
	for _, cmd := range [][]interface{}{
		{"SET", "str", "changed"},
		{"DEL", "gone"},
		{"SET", "extra", "v"},
		{"PEXPIREAT", "ttl", later},
		{"PERSIST", "persist"},
		{"DEL", "typed"},
		{"RPUSH", "typed", "v"},
		{"SREM", "set", "member-7"},
		{"SET", binKey, "bin\x00other"},
		{"SELECT", 3},
		{"LSET", "l3", 1, "Y"},
		{"SELECT", 5},
		{"SET", "only-in-db5", "v"},
	} {
		if _, err := c.Do(cmd[0].(string), cmd[1:]...); err != nil {
			t.Fatalf("%v: %v", cmd, err)
		}
	}
	c.Close()
	want := []string{
		"0/str/value", "0/gone/missing", "0/extra/extra", "0/ttl/ttl", "0/persist/ttl",
		"0/typed/type", "0/set/value", "0/" + binKey + "/value", "3/l3/value", "5/only-in-db5/extra",
	}
	sort.Strings(want)
	return want
}

// runCheck runs Check and returns the report and the differences seen by OnDiff as
// "db/key/kind", sorted.
func runCheck(t *testing.T, cfg check.Config) (check.Report, map[string][]string) {
	t.Helper()
	got := map[string][]string{}
	cfg.OnDiff = func(d check.Diff) {
		got[d.Slave] = append(got[d.Slave], fmt.Sprintf("%d/%s/%s", d.DB, d.Key, d.Kind))
		if cfg.Repair && !d.Repaired {
			t.Errorf("%s db %d %q (%s): not repaired: %s", d.Slave, d.DB, d.Key, d.Kind, d.RepairErr)
		}
		t.Logf("%s db%d %q %s: %s", d.Slave, d.DB, d.Key, d.Kind, d.Detail)
	}
	last := map[string]check.Progress{}
	cfg.OnProgress = func(p check.Progress) {
		last[fmt.Sprintf("%s/%d/%s", p.Phase, p.DB, strings.Join(p.Slaves, ","))] = p
	}
	rep, err := check.Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	for k, p := range last {
		if p.Done != p.Total {
			t.Errorf("progress %s ended at %d/%d", k, p.Done, p.Total)
		}
	}
	for _, v := range got {
		sort.Strings(v)
	}
	return rep, got
}

func checkConfig(master *redistest.Server, slaves ...*redistest.Server) check.Config {
	cfg := check.Config{
		Master:       replicate.Endpoint{Addr: master.Addr},
		RecheckDelay: 5 * time.Millisecond,
		Attempts:     3,
	}
	for _, s := range slaves {
		cfg.Slaves = append(cfg.Slaves, replicate.Endpoint{Addr: s.Addr})
	}
	return cfg
}

// TestCheck plants every kind of difference on one of two slaves: each is reported
// once, the other slave is clean, a repair fixes them all. With replication
// positions (the master's and the slaves' metadata equal, as with an idle proxy)
// and digests; and without metadata, comparing by content.
func TestCheck(t *testing.T) {
	for _, mode := range []struct {
		name      string
		byContent bool
		metadata  bool
	}{
		{"digest with positions", false, true},
		{"content without positions", true, false},
	} {
		t.Run(mode.name, func(t *testing.T) {
			srvs := redistest.StartN(t, 3)
			master, slaves := srvs[0], srvs[1:]
			populate(t, srvs...)
			if mode.metadata {
				master.Do(t, "MSET", replicate.KeyEpoch, "e1", replicate.KeySeq, 42,
					replicate.KeyBacklog+"-like", "master only")
				for _, s := range slaves {
					s.Do(t, "SET", replicate.KeyApplied, "e1:42")
				}
			}
			cfg := checkConfig(master, slaves...)
			cfg.ByContent = mode.byContent
			cfg.Rate = 2000 // paced, a few ms for these keys

			rep, got := runCheck(t, cfg)
			if !rep.Clean() || len(got) > 0 {
				t.Fatalf("identical servers: differences %v", got)
			}
			if rep.Digest == mode.byContent {
				t.Errorf("Digest = %v with ByContent %v", rep.Digest, mode.byContent)
			}
			if fmt.Sprint(rep.DBs) != "[0 3 15]" {
				t.Errorf("DBs = %v, want [0 3 15]", rep.DBs)
			}

			want := plant(t, slaves[0])
			rep, got = runCheck(t, cfg)
			if fmt.Sprint(got["slave-1"]) != fmt.Sprint(want) {
				t.Errorf("slave-1 differences:\n got %q\nwant %q", got["slave-1"], want)
			}
			if len(got["slave-2"]) > 0 {
				t.Errorf("slave-2 differences: %q", got["slave-2"])
			}
			if rep.Clean() || rep.Slaves[0].Differing() != int64(len(want)) || rep.Slaves[0].Kinds[check.DiffValue] != 4 {
				t.Errorf("report: %+v", rep.Slaves[0])
			}
			if rep.Slaves[1].Compared != rep.Slaves[0].Compared || rep.Slaves[1].Compared == 0 {
				t.Errorf("compared %d and %d keys", rep.Slaves[0].Compared, rep.Slaves[1].Compared)
			}

			cfg.Repair = true
			rep, got = runCheck(t, cfg)
			if fmt.Sprint(got["slave-1"]) != fmt.Sprint(want) || rep.Slaves[0].Repaired != int64(len(want)) || !rep.Clean() {
				t.Errorf("repair: differences %q, report %+v", got["slave-1"], rep.Slaves[0])
			}
			cfg.Repair = false
			if rep, got = runCheck(t, cfg); !rep.Clean() || len(got) > 0 {
				t.Errorf("after the repair: differences %v", got)
			}
			if diffs, err := redistest.Diff(master.Addr, slaves[0].Addr); err != nil || len(diffs) > 0 {
				t.Errorf("redistest.Diff after the repair: %v %v", diffs, err)
			}
		})
	}
}

// TestCheckSlaveBehind: a difference on a slave whose position is behind the
// master's is a write in flight until proven otherwise (unsettled); once the slave
// is at the master's position it is a difference.
func TestCheckSlaveBehind(t *testing.T) {
	srvs := redistest.StartN(t, 2)
	master, slave := srvs[0], srvs[1]
	master.Do(t, "MSET", replicate.KeyEpoch, "e1", replicate.KeySeq, 10, "k", "new")
	slave.Do(t, "MSET", replicate.KeyApplied, "e1:9", "k", "old")
	cfg := checkConfig(master, slave)

	rep, got := runCheck(t, cfg)
	if fmt.Sprint(got["slave-1"]) != "[0/k/unsettled]" || rep.Clean() {
		t.Errorf("slave behind: differences %v", got)
	}
	if d := rep.Slaves[0].Diffs; len(d) != 1 || !strings.Contains(d[0].Detail, "behind") {
		t.Errorf("slave behind: %+v", d)
	}

	slave.Do(t, "SET", replicate.KeyApplied, "e1:10")
	if _, got = runCheck(t, cfg); fmt.Sprint(got["slave-1"]) != "[0/k/value]" {
		t.Errorf("slave at the master's position: differences %v", got)
	}

	// A slave of another data set is compared but not repaired: a proxy would
	// resync it entirely.
	slave.Do(t, "SET", replicate.KeyApplied, "e0:10")
	cfg.Repair = true
	cfg.OnDiff = nil
	rep, err := check.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.Slaves[0]; s.Differing() != 1 || s.Repaired != 0 || len(s.Warnings) != 1 || s.Diffs[0].RepairErr == "" {
		t.Errorf("slave of another epoch: %+v", s)
	}
	if v, _ := redis.String(slave.Do(t, "GET", "k"), nil); v != "old" {
		t.Errorf("slave of another epoch was repaired: k = %q", v)
	}
}

// TestCheckErrors: unreachable servers and bad configurations are errors.
func TestCheckErrors(t *testing.T) {
	srv := redistest.Start(t)
	if _, err := check.Run(context.Background(), check.Config{Master: replicate.Endpoint{Addr: srv.Addr}}); err == nil {
		t.Error("no slaves: no error")
	}
	cfg := checkConfig(srv)
	cfg.Slaves = []replicate.Endpoint{{Addr: "127.0.0.1:1"}}
	cfg.Timeout = time.Second
	if _, err := check.Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "slave-1") {
		t.Errorf("unreachable slave: %v", err)
	}
}

// TestCheckWithoutDebug: a server that refuses DEBUG makes the check compare
// values by content.
func TestCheckWithoutDebug(t *testing.T) {
	master := redistest.Start(t)
	slave := redistest.Start(t, "--enable-debug-command", "no")
	populate(t, master, slave)
	rep, got := runCheck(t, checkConfig(master, slave))
	if rep.Digest || !rep.Clean() || len(got) > 0 {
		t.Errorf("Digest %v, differences %v", rep.Digest, got)
	}
}
