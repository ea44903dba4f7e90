package e2e

import (
	"errors"
	"testing"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
	"github.com/syncproxy/syncproxy/replicate"
)

// TestSlaveMaxmemoryBelowMaster: the proxy refuses to start in front of a slave
// whose maxmemory is below the master's (it would evict keys the master keeps),
// saying which and why, unless allowed; a slave with more room starts.
func TestSlaveMaxmemoryBelowMaster(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	start := func(allow bool) (*proxy.Server, error) {
		cfg := proxy.DefaultConfig()
		cfg.Listen = "127.0.0.1:0"
		cfg.Master = master.Addr
		cfg.Slaves = []string{slaves[0].Addr, slaves[1].Addr}
		cfg.AllowSlaveEviction = allow
		srv, err := proxy.NewServer(cfg, newLogger(t))
		if err == nil {
			t.Cleanup(func() { closeBounded(t, srv) })
		}
		return srv, err
	}
	master.Do(t, "CONFIG", "SET", "maxmemory", "64mb")
	slaves[0].Do(t, "CONFIG", "SET", "maxmemory", "128mb")
	slaves[1].Do(t, "CONFIG", "SET", "maxmemory", "32mb")
	if _, err := start(false); !errors.Is(err, replicate.ErrSlaveEvicts) {
		t.Fatalf("NewServer with a slave at 32mb under a master at 64mb: %v, want ErrSlaveEvicts", err)
	} else {
		t.Logf("refused: %v", err)
	}
	if _, err := start(true); err != nil {
		t.Fatalf("NewServer with --allow-slave-eviction: %v", err)
	}
	slaves[1].Do(t, "CONFIG", "SET", "maxmemory", "0")
	if _, err := start(false); err != nil {
		t.Fatalf("NewServer with slaves of more room than the master: %v", err)
	}
}
