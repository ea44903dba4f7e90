package router

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// cmdTestRedis starts a redis-server on a free loopback port in a temporary
// directory, stopped by t.Cleanup, and returns a connection to it. It skips the
// test when redis-server is not installed.
func cmdTestRedis(t *testing.T) redis.Conn {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed")
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--dir", dir, "--save", "", "--appendonly", "no", "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.After(10 * time.Second)
	for {
		conn, err := redis.Dial("tcp", addr, redis.DialConnectTimeout(time.Second),
			redis.DialReadTimeout(5*time.Second), redis.DialWriteTimeout(5*time.Second))
		if err == nil {
			if _, err = conn.Do("PING"); err == nil {
				t.Cleanup(func() { conn.Close() })
				return conn
			}
			conn.Close()
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			t.Fatalf("redis-server exited: %s", bytes.TrimSpace(log))
		case <-deadline:
			t.Fatalf("redis-server not answering on %s: %v", addr, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// cmdArgs splits a command line on spaces.
func cmdArgs(line string) [][]byte {
	var args [][]byte
	for _, f := range strings.Fields(line) {
		args = append(args, []byte(f))
	}
	return args
}

func TestCommandTableMatchesLiveRedis(t *testing.T) {
	conn := cmdTestRedis(t)
	info, err := redis.String(conn.Do("INFO", "server"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info, "redis_version:"+tableBuiltinVersion+"\r\n") {
		t.Skipf("commands_builtin.go is from Redis %s, the installed server is another version", tableBuiltinVersion)
	}
	reply, err := conn.Do("COMMAND")
	if err != nil {
		t.Fatal(err)
	}
	infos, err := ParseCommandReply(reply)
	if err != nil {
		t.Fatal(err)
	}
	live, builtin := NewTable(infos), BuiltinTable()
	if !slices.Equal(live.Names(), builtin.Names()) {
		t.Fatalf("names differ:\nlive:    %v\nbuiltin: %v", live.Names(), builtin.Names())
	}
	nsubs := 0
	for _, name := range live.Names() {
		l, b := live.cmds[name], builtin.cmds[name]
		if !reflect.DeepEqual(l, b) {
			t.Errorf("%s: live %+v, builtin %+v", name, l, b)
		}
		nsubs += len(l.Subcommands)
	}
	if live.Len() < 200 || nsubs < 100 {
		t.Errorf("live table has %d commands and %d subcommands; want Redis 7's 240 and 126", live.Len(), nsubs)
	}

	// The server's own key extraction agrees with KeyIndexes.
	for _, line := range []string{
		"get k", "mset a 1 b 2", "eval s 2 a b x", "zunionstore d 2 a b weights 1 2",
		"xread count 1 streams a b 0 0", "lmpop 2 a b left", "sort k by w get g store d",
		"georadius k 1 2 3 m store d", "blpop a b 0", "object encoding k",
	} {
		args := cmdArgs(line)
		want, err := redis.Strings(conn.Do("COMMAND", append([]interface{}{"GETKEYS"}, cmdAnySlice(args)...)...))
		if err != nil {
			t.Fatalf("COMMAND GETKEYS %s: %v", line, err)
		}
		var got []string
		for _, i := range builtin.Lookup(args).KeyIndexes(args, nil) {
			got = append(got, string(args[i]))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: keys %q, Redis says %q", line, got, want)
		}
	}
}

func cmdAnySlice(args [][]byte) []interface{} {
	out := make([]interface{}, len(args))
	for i, a := range args {
		out[i] = a
	}
	return out
}

func TestTableLookup(t *testing.T) {
	table := BuiltinTable()
	tests := []struct {
		line string
		want string // "" for nil
	}{
		{"get k", "get"},
		{"GET k", "get"},
		{"gEt", "get"},
		{"config get maxmemory", "config|get"},
		{"CONFIG GET maxmemory", "config|get"},
		{"Config Set maxmemory 1", "config|set"},
		{"client setname x", "client|setname"},
		{"CLIENT SETNAME x", "client|setname"},
		{"object encoding k", "object|encoding"},
		{"xinfo stream s", "xinfo|stream"},
		{"command count", "command|count"},
		{"config nosuch", "config"},
		{"config", "config"},
		{"set k get", "set"}, // no subcommands: args[1] is ignored
		{"nosuch", ""},
		{"config|get", ""},
		{strings.Repeat("g", 100), ""},
	}
	for _, tt := range tests {
		c := table.Lookup(cmdArgs(tt.line))
		var got string
		if c != nil {
			got = c.Name
		}
		if got != tt.want {
			t.Errorf("Lookup(%q) = %q, want %q", tt.line, got, tt.want)
		}
	}
	if c := table.Lookup(nil); c != nil {
		t.Errorf("Lookup(nil) = %q", c.Name)
	}
	if c := table.Lookup([][]byte{{}}); c != nil {
		t.Errorf("Lookup(empty name) = %q", c.Name)
	}

	// Flags as Redis 7.0 reports them.
	flags := []struct {
		line      string
		has, hasn Flags
	}{
		{"get", FlagReadonly | FlagFast, FlagWrite},
		{"set", FlagWrite | FlagDenyOOM, FlagReadonly},
		{"config get", FlagAdmin | FlagNoScript | FlagLoading | FlagStale, FlagReadonly | FlagWrite},
		{"client setname", FlagNoScript | FlagLoading | FlagStale, FlagReadonly | FlagWrite},
		{"eval", FlagNoScript | FlagMovableKeys | FlagSkipMonitor, FlagReadonly},
		{"blpop", FlagWrite | FlagBlocking, FlagReadonly},
		{"subscribe", FlagPubSub | FlagNoScript, FlagWrite},
		{"auth", FlagNoAuth | FlagAllowBusy, 0},
		{"exec", FlagNoScript | FlagLoading | FlagStale, FlagReadonly | FlagWrite},
	}
	for _, tt := range flags {
		c := table.Lookup(cmdArgs(tt.line))
		if c == nil {
			t.Errorf("%s: unknown", tt.line)
			continue
		}
		if !c.Has(tt.has) || tt.hasn != 0 && c.Flags&tt.hasn != 0 {
			t.Errorf("%s: flags %b, want %b set and %b clear", tt.line, c.Flags, tt.has, tt.hasn)
		}
	}
}

func TestTableLookupAllocs(t *testing.T) {
	table := BuiltinTable()
	lines := [][][]byte{
		cmdArgs("GET k"), cmdArgs("get k"), cmdArgs("CONFIG GET x"), cmdArgs("client SetName x"),
		cmdArgs("nosuch"), cmdArgs("config nosuch"), cmdArgs(strings.Repeat("X", 200)),
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, args := range lines {
			table.Lookup(args)
		}
	})
	if allocs != 0 {
		t.Errorf("Lookup allocates %v times per run", allocs)
	}
}

func TestTableNames(t *testing.T) {
	table := BuiltinTable()
	names := table.Names()
	if len(names) != table.Len() || table.Len() < 200 {
		t.Fatalf("Len %d, %d names", table.Len(), len(names))
	}
	if !slices.IsSorted(names) || !slices.Contains(names, "get") || slices.Contains(names, "config|get") {
		t.Errorf("Names not sorted top-level names: %v", names)
	}
	names[0] = "changed"
	if table.Names()[0] == "changed" {
		t.Error("Names exposes the table's slice")
	}
	empty := NewTable([]*CommandInfo{nil, {Name: "PING", Arity: -1}})
	if empty.Len() != 1 || empty.Lookup(cmdArgs("ping")) == nil {
		t.Errorf("NewTable does not skip nil or lower-case names: %v", empty.Names())
	}
}

func TestCheckArity(t *testing.T) {
	table := BuiltinTable()
	tests := []struct {
		line string
		ok   bool
	}{
		{"get", false},
		{"get k", true},
		{"get k x", false},
		{"set k", false},
		{"set k v", true},
		{"set k v ex 10", true},
		{"mset k", false},
		{"mset k v", true},
		{"mset k v k2 v2", true},
		{"ping", true},
		{"ping hello", true},
		{"config", false}, // the container: at least a subcommand
		{"config get", false},
		{"config get maxmemory", true},
		{"config get maxmemory maxclients", true},
	}
	for _, tt := range tests {
		args := cmdArgs(tt.line)
		c := table.Lookup(args)
		if got := c.CheckArity(len(args)); got != tt.ok {
			t.Errorf("%s: CheckArity(%d) = %v with arity %d, want %v", tt.line, len(args), got, c.Arity, tt.ok)
		}
	}
	if !(&CommandInfo{}).CheckArity(5) {
		t.Error("unknown arity refuses arguments")
	}
}

func TestKeyIndexes(t *testing.T) {
	table := BuiltinTable()
	tests := []struct {
		line string
		want []int
	}{
		{"get k", []int{1}},
		{"get", nil},
		{"ping", nil},
		{"mset a 1 b 2 c 3", []int{1, 3, 5}},
		{"mset a 1 b", []int{1, 3}}, // as COMMAND GETKEYS says
		{"del a b c", []int{1, 2, 3}},
		{"blpop a b 0", []int{1, 2}},
		{"bitop and d a b", []int{2, 3, 4}},
		{"object encoding k", []int{2}},
		{"eval s 0", nil},
		{"eval s 2 a b x y", []int{3, 4}},
		{"EVALSHA sha 1 a", []int{3}},
		{"fcall_ro f 1 a x", []int{3}},
		{"eval s 5 a b", []int{3, 4}}, // count clamped
		{"eval s -1 a", nil},
		{"eval s x a", nil},
		{"eval s", nil},
		{"zunionstore d 2 a b weights 1 2", []int{1, 3, 4}},
		{"zinterstore d 1 a", []int{1, 3}},
		{"zdiffstore d", []int{1}},
		{"zunion 2 a b withscores", []int{2, 3}},
		{"sintercard 1 a limit 2", []int{2}},
		{"lmpop 2 a b left count 3", []int{2, 3}},
		{"blmpop 0 2 a b left", []int{3, 4}},
		{"bzmpop 1.5 1 a min", []int{3}},
		{"xread count 1 block 0 streams a b 0 0", []int{6, 7}},
		{"XREAD STREAMS a 0", []int{2}},
		{"xread streams streams streams 0 0", []int{2, 3}},
		{"xread streams a b 0", nil},
		{"xread count 1", nil},
		{"xreadgroup group g c noack streams a >", []int{6}},
		{"xreadgroup group streams streams streams a >", []int{5}},
		{"sort k", []int{1}},
		{"sort k by w get g limit 0 10 store d", []int{1, 10}},
		{"sort k store d1 store d2", []int{1, 5}},
		{"sort k get store", []int{1}},
		{"sort k store", []int{1}},
		{"sort_ro k by w", []int{1}},
		{"migrate h 6379 k 0 1000", nil},
		{"migrate h 6379 \"\" 0 1000 keys a b", nil},
		{"georadius k 1 2 3 m store d", []int{1, 7}},
		{"georadius k 1 2 3 m withdist storedist d", []int{1, 8}},
		{"georadiusbymember k m 3 km STORE d", []int{1, 6}},
		{"georadius k 1 2 3 m", []int{1}},
		{"georadius_ro k 1 2 3 m", []int{1}},
	}
	for _, tt := range tests {
		args := cmdArgs(tt.line)
		c := table.Lookup(args)
		if c == nil {
			t.Fatalf("%s: unknown command", tt.line)
		}
		if got := c.KeyIndexes(args, nil); !slices.Equal(got, tt.want) {
			t.Errorf("%s: KeyIndexes = %v, want %v", tt.line, got, tt.want)
		}
	}

	// dst is appended to, not replaced.
	args := cmdArgs("del a b")
	if got := table.Lookup(args).KeyIndexes(args, []int{9}); !slices.Equal(got, []int{9, 1, 2}) {
		t.Errorf("KeyIndexes does not append: %v", got)
	}
}

// cmdCheckKeys fails t unless keys are increasing indexes of args after the name.
func cmdCheckKeys(t *testing.T, args [][]byte, keys []int) {
	t.Helper()
	prev := 0
	for _, k := range keys {
		if k <= prev || k >= len(args) {
			t.Fatalf("%q: bad key indexes %v", args, keys)
		}
		prev = k
	}
}

func TestKeyIndexesGarbage(t *testing.T) {
	table := BuiltinTable()
	var infos []*CommandInfo
	for _, name := range table.Names() {
		c := table.cmds[name]
		infos = append(infos, c)
		for _, sub := range c.Subcommands {
			infos = append(infos, sub)
		}
	}
	infos = append(infos, &CommandInfo{Name: "weird", FirstKey: 3, LastKey: -7, Step: -2},
		&CommandInfo{Name: "weird2", FirstKey: 1, LastKey: 100, Step: 0})
	tails := []string{
		"", "x", "-1", "999999999999999999999999", "99999999999999999", "2", "2 a",
		"streams", "streams a", "group streams", "block", "store", "limit 0", "get",
		"1 2 3 4 5 store", "1 2 3 4 store d", "numkeys 3 a b c d e f g",
	}
	for _, c := range infos {
		for _, tail := range tails {
			args := append([][]byte{[]byte(c.Name)}, cmdArgs(tail)...)
			cmdCheckKeys(t, args, c.KeyIndexes(args, nil))
			cmdCheckKeys(t, args[:1], c.KeyIndexes(args[:1], nil))
		}
		c.KeyIndexes(nil, nil) // must not panic
	}
}

func TestParseCommandReplyMalformed(t *testing.T) {
	ok := func(name string) []interface{} {
		return []interface{}{[]byte(name), int64(2), []interface{}{"readonly"}, int64(1), int64(1), int64(1)}
	}
	with := func(i int, v interface{}) []interface{} {
		e := append(ok("get"), []interface{}{}, []interface{}{}, []interface{}{}, []interface{}{})
		e[i] = v
		return e
	}
	tests := []struct {
		name  string
		reply interface{}
	}{
		{"nil", nil},
		{"string", "OK"},
		{"error", redis.Error("ERR unknown command")},
		{"entry not array", []interface{}{int64(1)}},
		{"short entry", []interface{}{[]interface{}{[]byte("get"), int64(2)}}},
		{"nil entry", []interface{}{nil}},
		{"name int", []interface{}{with(0, int64(3))}},
		{"name empty", []interface{}{with(0, []byte(""))}},
		{"arity string", []interface{}{with(1, "2")}},
		{"arity huge", []interface{}{with(1, int64(1)<<40)}},
		{"first nil", []interface{}{with(3, nil)}},
		{"flags string", []interface{}{with(2, "readonly")}},
		{"flag int", []interface{}{with(2, []interface{}{int64(1)})}},
		{"subcommands string", []interface{}{with(9, "x")}},
		{"subcommand not array", []interface{}{with(9, []interface{}{"x"})}},
		{"subcommand empty name", []interface{}{with(9, []interface{}{ok("get|")})}},
		{"subcommands nested", []interface{}{with(9, []interface{}{with(9, []interface{}{ok("a|b|c")})})}},
		{"good then bad", []interface{}{ok("get"), ok("set")[:3]}},
	}
	for _, tt := range tests {
		infos, err := ParseCommandReply(tt.reply)
		if err == nil || !strings.HasPrefix(err.Error(), "router: ") {
			t.Errorf("%s: got %v, %v; want a router error", tt.name, infos, err)
		}
	}
}

func TestParseCommandReplyShapes(t *testing.T) {
	reply := []interface{}{
		// Redis 2.8 to 5: six fields, status flags.
		[]interface{}{[]byte("GET"), int64(2), []interface{}{"readonly", "fast"}, int64(1), int64(1), int64(1)},
		// Redis 6: ACL categories, dashed flag spelling.
		[]interface{}{"auth", int64(-2), []interface{}{"noscript", "no-auth", "random"}, int64(0), int64(0), int64(0),
			[]interface{}{"@connection"}},
		// Redis 7 with subcommands, one of them without the container prefix.
		[]interface{}{[]byte("config"), int64(-2), []interface{}{}, int64(0), int64(0), int64(0),
			[]interface{}{}, []interface{}{}, []interface{}{}, []interface{}{
				[]interface{}{[]byte("config|get"), int64(-3), []interface{}{"admin"}, int64(0), int64(0), int64(0),
					[]interface{}{}, []interface{}{}, []interface{}{}, []interface{}{}},
				[]interface{}{[]byte("SET"), int64(-4), []interface{}{"admin"}, int64(0), int64(0), int64(0)},
			}},
	}
	infos, err := ParseCommandReply(reply)
	if err != nil {
		t.Fatal(err)
	}
	want := []*CommandInfo{
		{Name: "get", Arity: 2, Flags: FlagReadonly | FlagFast, FirstKey: 1, LastKey: 1, Step: 1},
		{Name: "auth", Arity: -2, Flags: FlagNoScript | FlagNoAuth},
		{Name: "config", Arity: -2, Subcommands: map[string]*CommandInfo{
			"get": {Name: "config|get", Arity: -3, Flags: FlagAdmin},
			"set": {Name: "config|set", Arity: -4, Flags: FlagAdmin},
		}},
	}
	if !reflect.DeepEqual(infos, want) {
		for i := range infos {
			t.Logf("%d: %+v", i, infos[i])
		}
		t.Fatal("unexpected infos")
	}
}

func FuzzKeyIndexes(f *testing.F) {
	for _, seed := range []string{
		"eval\nreturn 1\n2\na\nb",
		"zunionstore\nd\n2\na\nb",
		"xreadgroup\ngroup\ng\nc\nstreams\na\nb\n>\n>",
		"sort\nk\nlimit\n0\n1\nstore\nd",
		"georadius\nk\n1\n2\n3\nm\nstoredist\nd",
		"mset\na\n1\nb",
		"blmpop\n0\n99999\na",
		"x",
	} {
		f.Add([]byte(seed))
	}
	table := BuiltinTable()
	names := table.Names()
	f.Fuzz(func(t *testing.T, data []byte) {
		args := bytes.Split(data, []byte("\n"))
		c := table.Lookup(args)
		if c == nil {
			// Give the arguments to some command anyway.
			args[0] = []byte(names[len(data)%len(names)])
			c = table.Lookup(args)
		}
		cmdCheckKeys(t, args, c.KeyIndexes(args, nil))
	})
}

func BenchmarkTableLookup(b *testing.B) {
	table := BuiltinTable()
	args := cmdArgs("CONFIG GET maxmemory")
	for b.Loop() {
		table.Lookup(args)
	}
}

func BenchmarkBuiltinTable(b *testing.B) {
	for b.Loop() {
		BuiltinTable()
	}
}

func ExampleTable_Lookup() {
	table := BuiltinTable()
	args := [][]byte{[]byte("ZUNIONSTORE"), []byte("dest"), []byte("2"), []byte("a"), []byte("b")}
	c := table.Lookup(args)
	fmt.Println(c.Name, c.Has(FlagWrite), c.KeyIndexes(args, nil))
	// Output: zunionstore true [1 3 4]
}

// TestKeysAtPositions: a command said to have its keys at its legacy positions
// gets exactly those from KeyIndexes, whatever the arguments.
func TestKeysAtPositions(t *testing.T) {
	table := BuiltinTable()
	args := [][]byte{nil, []byte("2"), []byte("a"), []byte("b"), []byte("STORE"), []byte("c"), []byte("STREAMS"), []byte("d"), []byte("0")}
	for _, name := range table.Names() {
		ci := table.Lookup([][]byte{[]byte(name)})
		infos := []*CommandInfo{ci}
		for _, sub := range ci.Subcommands {
			infos = append(infos, sub)
		}
		for _, c := range infos {
			if !c.KeysAtPositions() {
				continue
			}
			args[0] = []byte(c.Name)
			got := c.KeyIndexes(args, nil)
			want := cmdRangeKeys(args, c.FirstKey, c.LastKey, c.Step, nil)
			if !slices.Equal(got, want) {
				t.Errorf("%s: KeyIndexes %v, legacy positions %v", c.Name, got, want)
			}
		}
	}
	for _, name := range []string{"sort", "zunionstore", "xread", "eval", "georadius"} {
		if table.Lookup([][]byte{[]byte(name)}).KeysAtPositions() {
			t.Errorf("%s: keys at positions", name)
		}
	}
}

// TestCompleteFromBuiltin: a master's COMMAND reply without subcommands (Redis
// 6, miniredis) takes the built-in rows of the containers, keeps its other
// rows, and gains no command it does not report but those the proxy answers
// itself (HELLO: redis-cli -3 on the demo's miniredis master).
func TestCompleteFromBuiltin(t *testing.T) {
	infos := CompleteFromBuiltin([]*CommandInfo{
		{Name: "client", Arity: -2},
		{Name: "get", Arity: 2, Flags: FlagReadonly, FirstKey: 1, LastKey: 1, Step: 1},
		{Name: "custom", Arity: -1},
		nil,
	})
	tab := NewTable(infos)
	for _, tt := range []struct{ line, want string }{
		{"CLIENT LIST", "client|list"}, {"client info", "client|info"}, {"CLIENT", "client"},
		{"GET k", "get"}, {"CUSTOM", "custom"}, {"HELLO 3", "hello"}, {"RESET", "reset"},
	} {
		if ci := tab.Lookup(cmdArgs(tt.line)); ci == nil || ci.Name != tt.want {
			t.Errorf("%s: got %+v, want %s", tt.line, ci, tt.want)
		}
	}
	if ci := tab.Lookup(cmdArgs("SET k v")); ci != nil {
		t.Errorf("SET, which the master did not report, is in the table: %+v", ci)
	}
	local := 0
	for name, r := range rows {
		if r.Class == ClassLocal && !strings.Contains(name, "|") {
			local++
		}
	}
	if tab.Len() != 3+local {
		t.Errorf("%d commands, want the 3 reported and the %d the proxy answers", tab.Len(), local)
	}
}
