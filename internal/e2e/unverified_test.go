package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
	"github.com/syncproxy/syncproxy/replicate"
)

// TestUnverifiedApplyResyncs: when a slave refuses the position check of an
// apply transaction (here EVAL taken from the proxy's user on the slave) the
// transaction behind it still runs, so whether the slave was at the run's start
// is not known: the slave leaves the read set and is copied again, which makes
// it exact whatever happened.
func TestUnverifiedApplyResyncs(t *testing.T) {
	t.Parallel()
	args := []string{"--requirepass", "admin-pw", "--user", "app", "on", ">app-pw", "~*", "&*", "+@all"}
	master := redistest.Start(t)
	slave := redistest.Start(t, args...)
	addr, srv := startProxyWith(t, func(c *proxy.Config) {
		c.SlaveUser, c.SlavePassword = "app", "app-pw"
	}, master, slave)
	w := redistest.DialRaw(t, addr)
	mustReply(t, w, "+OK\r\n", "SET", "k", "1")
	admin, err := redis.Dial("tcp", slave.Addr, redis.DialPassword("admin-pw"), redis.DialReadTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	wait := func(what string, cond func() bool) {
		redistest.CheckFor(t, 20*time.Second, poll, func() error {
			if !cond() {
				return fmt.Errorf("%s", what)
			}
			return nil
		})
	}
	a := srv.Replicator().Appliers()[0]
	wait("slave online with k", func() bool {
		v, _ := redis.String(admin.Do("GET", "k"))
		return a.Online() && v == "1"
	})
	if _, err := admin.Do("ACL", "SETUSER", "app", "-eval", "-evalsha"); err != nil {
		t.Fatal(err)
	}
	mustReply(t, w, "+OK\r\n", "SET", "k", "2")
	wait("the slave left the read set", func() bool { return !a.Online() })
	if _, err := admin.Do("ACL", "SETUSER", "app", "+eval", "+evalsha"); err != nil {
		t.Fatal(err)
	}
	wait("copied again for the unverified run", func() bool {
		return a.Online() && a.ResyncsFor(replicate.ResyncUnverified) == 1
	})
	redistest.WaitConverged(t, convergeTimeout, master, slave)
}
