package main

import (
	"net"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// TestDemoClientList: in demo mode, whose in-process master reports no
// subcommands in COMMAND, CLIENT subcommands are still served by their own rows
// (issue 13, item 13).
func TestDemoClientList(t *testing.T) {
	cfg := proxy.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	stop, err := startDemo(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	srv, err := proxy.NewServer(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := redistest.DialRaw(t, ln.Addr().String())
	for _, args := range [][]string{{"CLIENT", "LIST"}, {"CLIENT", "INFO"}} {
		if got := string(c.Do(args...)); !strings.HasPrefix(got, "$") || !strings.Contains(got, " cmd=client|") {
			t.Errorf("%v: %q", args, got)
		}
	}
	if got := string(c.Do("CLIENT", "SETNAME", "demo")); got != "+OK\r\n" {
		t.Errorf("CLIENT SETNAME: %q", got)
	}
	if got := string(c.Do("CLIENT", "GETNAME")); got != "$4\r\ndemo\r\n" {
		t.Errorf("CLIENT GETNAME: %q", got)
	}
	// miniredis answers COMMAND DOCS with COMMAND's reply, on which redis-cli
	// (interactive, at start) aborts: Redis 6's error makes it use its own help.
	if got := string(c.Do("COMMAND", "DOCS")); !strings.HasPrefix(got, "-ERR Unknown subcommand") {
		t.Errorf("COMMAND DOCS on the demo: %.80q", got)
	}
	// miniredis has no HELLO: the proxy answers it (redis-cli -3 on the demo).
	if got := string(c.Do("HELLO", "3")); !strings.HasPrefix(got, "%") || !strings.Contains(got, "proto\r\n:3\r\n") {
		t.Errorf("HELLO 3: %q", got)
	}
	if got := string(c.Do("GET", "nokey")); got != "_\r\n" {
		t.Errorf("GET of a missing key after HELLO 3: %q, want RESP3's null", got)
	}
}
