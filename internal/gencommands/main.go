// Command gencommands writes router/commands_builtin.go, the command table the
// proxy falls back on when its master does not implement COMMAND.
//
// It starts a throwaway redis-server (loopback, free port, temporary directory,
// no persistence), reads its COMMAND reply with redigo and writes the reply as Go
// literals, sorted by name so that the output depends only on the server version.
// Run it from the module root or through go generate in router/:
//
//	go run ./internal/gencommands [-redis-server path] [-o file]
//
// It parses the reply itself rather than through the router package, so that it
// still runs when router does not compile (for instance without its output).
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"go/format"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// flagIdents maps COMMAND flag strings to the router constants; other flags are
// not kept. It must match router's cmdFlagNames (router's tests compare the
// generated table with a live server's).
var flagIdents = map[string]string{
	"write":         "FlagWrite",
	"readonly":      "FlagReadonly",
	"denyoom":       "FlagDenyOOM",
	"admin":         "FlagAdmin",
	"pubsub":        "FlagPubSub",
	"noscript":      "FlagNoScript",
	"blocking":      "FlagBlocking",
	"loading":       "FlagLoading",
	"stale":         "FlagStale",
	"fast":          "FlagFast",
	"movablekeys":   "FlagMovableKeys",
	"no_auth":       "FlagNoAuth",
	"may_replicate": "FlagMayReplicate",
	"skip_monitor":  "FlagSkipMonitor",
	"no_multi":      "FlagNoMulti",
	"allow_busy":    "FlagAllowBusy",
}

// flagOrder is the order flags are written in: the order of the constants.
var flagOrder = []string{
	"write", "readonly", "denyoom", "admin", "pubsub", "noscript", "blocking", "loading",
	"stale", "fast", "movablekeys", "no_auth", "may_replicate", "skip_monitor", "no_multi",
	"allow_busy",
}

// command is one parsed COMMAND entry.
type command struct {
	name              string // without the container prefix for subcommands
	arity             int64
	flags             []string // Go identifiers, in flagOrder
	first, last, step int64
	subs              []command
}

func main() {
	server := flag.String("redis-server", "redis-server", "redis-server binary to read COMMAND from")
	out := flag.String("o", "", "output file (default: router/commands_builtin.go in the module)")
	flag.Parse()
	if err := run(*server, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gencommands:", err)
		os.Exit(1)
	}
}

func run(server, out string) error {
	if out == "" {
		root, err := moduleRoot()
		if err != nil {
			return err
		}
		out = filepath.Join(root, "router", "commands_builtin.go")
	}
	conn, stop, err := startRedis(server)
	if err != nil {
		return err
	}
	defer stop()
	defer conn.Close()

	info, err := redis.String(conn.Do("INFO", "server"))
	if err != nil {
		return fmt.Errorf("INFO: %w", err)
	}
	version := infoField(info, "redis_version")
	reply, err := conn.Do("COMMAND")
	if err != nil {
		return fmt.Errorf("COMMAND: %w", err)
	}
	cmds, err := parseCommands(reply, "")
	if err != nil {
		return fmt.Errorf("COMMAND reply: %w", err)
	}
	src, err := render(version, cmds)
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, src, 0o644); err != nil {
		return err
	}
	fmt.Printf("gencommands: wrote %d commands from Redis %s to %s\n", len(cmds), version, out)
	return nil
}

// moduleRoot returns the directory of the nearest go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory; pass -o")
		}
		dir = parent
	}
}

// startRedis starts server on a free loopback port in a temporary directory and
// returns a connection to it once it answers, and a function that stops it and
// removes the directory.
func startRedis(server string) (redis.Conn, func(), error) {
	path, err := exec.LookPath(server)
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp("", "gencommands-")
	if err != nil {
		return nil, nil, err
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	cmd := exec.Command(path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--dir", dir, "--save", "", "--appendonly", "no", "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
		os.RemoveAll(dir)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := redis.Dial("tcp", addr, redis.DialConnectTimeout(time.Second))
		if err == nil {
			if _, err = conn.Do("PING"); err == nil {
				return conn, stop, nil
			}
			conn.Close()
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			stop()
			return nil, nil, fmt.Errorf("%s exited: %s", path, bytes.TrimSpace(log))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, nil, fmt.Errorf("%s not answering on %s: %w", path, addr, err)
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// infoField returns the value of key in an INFO reply.
func infoField(info, key string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+":"); ok {
			return v
		}
	}
	return "unknown"
}

// parseCommands parses a COMMAND reply (or a subcommand list of container).
func parseCommands(reply interface{}, container string) ([]command, error) {
	items, ok := reply.([]interface{})
	if !ok {
		return nil, fmt.Errorf("%T is not an array", reply)
	}
	var cmds []command
	for _, item := range items {
		f, ok := item.([]interface{})
		if !ok || len(f) < 6 {
			return nil, fmt.Errorf("bad entry %v", item)
		}
		name, err := redis.String(f[0], nil)
		if err != nil {
			return nil, fmt.Errorf("bad name %v", f[0])
		}
		name = strings.ToLower(name)
		if container != "" {
			name = name[strings.LastIndexByte(name, '|')+1:]
		}
		c := command{name: name}
		for i, p := range []*int64{&c.arity, &c.first, &c.last, &c.step} {
			v, ok := f[[]int{1, 3, 4, 5}[i]].(int64)
			if !ok {
				return nil, fmt.Errorf("%s: bad integer field", name)
			}
			*p = v
		}
		flags, err := redis.Strings(f[2], nil)
		if err != nil {
			return nil, fmt.Errorf("%s: flags: %w", name, err)
		}
		have := make(map[string]bool)
		for _, fl := range flags {
			have[strings.ReplaceAll(strings.ToLower(fl), "-", "_")] = true
		}
		for _, fl := range flagOrder {
			if have[fl] {
				c.flags = append(c.flags, flagIdents[fl])
			}
		}
		if len(f) >= 10 && f[9] != nil {
			if c.subs, err = parseCommands(f[9], name); err != nil {
				return nil, err
			}
		}
		cmds = append(cmds, c)
	}
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	return cmds, nil
}

// render returns the gofmt'ed source of commands_builtin.go.
func render(version string, cmds []command) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "// Code generated by internal/gencommands; DO NOT EDIT.\n\n")
	fmt.Fprintf(&b, "package router\n\n")
	fmt.Fprintf(&b, "// tableBuiltinVersion is the version of the redis-server whose COMMAND reply tableBuiltin is.\n")
	fmt.Fprintf(&b, "const tableBuiltinVersion = %q\n\n", version)
	fmt.Fprintf(&b, "// tableBuiltin is the COMMAND reply of Redis %s, sorted by name.\n", version)
	fmt.Fprintf(&b, "var tableBuiltin = []cmdSpec{\n")
	for _, c := range cmds {
		writeSpec(&b, c)
	}
	fmt.Fprintf(&b, "}\n")
	src, err := format.Source(b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("gofmt: %w", err)
	}
	return src, nil
}

func writeSpec(b *bytes.Buffer, c command) {
	fmt.Fprintf(b, "{name: %q, arity: %d", c.name, c.arity)
	if len(c.flags) > 0 {
		fmt.Fprintf(b, ", flags: %s", strings.Join(c.flags, " | "))
	}
	if c.first != 0 || c.last != 0 || c.step != 0 {
		fmt.Fprintf(b, ", first: %d, last: %d, step: %d", c.first, c.last, c.step)
	}
	if len(c.subs) == 0 {
		fmt.Fprintf(b, "},\n")
		return
	}
	fmt.Fprintf(b, ", subs: []cmdSpec{\n")
	for _, s := range c.subs {
		writeSpec(b, s)
	}
	fmt.Fprintf(b, "}},\n")
}
