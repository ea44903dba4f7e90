package router

//go:generate go run ../internal/gencommands

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
)

// Flags are the COMMAND flags the proxy cares about.
type Flags uint32

// The flags a command can carry, named after Redis' COMMAND flags.
const (
	FlagWrite        Flags = 1 << iota // may modify the dataset
	FlagReadonly                       // only reads the dataset
	FlagDenyOOM                        // may use memory: refused when over maxmemory
	FlagAdmin                          // administrative command
	FlagPubSub                         // pub/sub related
	FlagNoScript                       // not allowed from scripts
	FlagBlocking                       // may block the client
	FlagLoading                        // allowed while the server loads its data
	FlagStale                          // allowed on a replica with stale data
	FlagFast                           // O(1) or O(log N)
	FlagMovableKeys                    // key positions depend on the arguments
	FlagNoAuth                         // allowed before AUTH
	FlagMayReplicate                   // may be replicated although not a write
	FlagSkipMonitor                    // not shown by MONITOR
	FlagNoMulti                        // not allowed inside MULTI
	FlagAllowBusy                      // allowed while a script or function is busy
)

// cmdFlagNames maps the flag strings of a COMMAND reply to Flags. Flags the proxy
// does not use (skip_slowlog, asking, no_mandatory_keys, ...) are ignored.
var cmdFlagNames = map[string]Flags{
	"write":         FlagWrite,
	"readonly":      FlagReadonly,
	"denyoom":       FlagDenyOOM,
	"admin":         FlagAdmin,
	"pubsub":        FlagPubSub,
	"noscript":      FlagNoScript,
	"blocking":      FlagBlocking,
	"loading":       FlagLoading,
	"stale":         FlagStale,
	"fast":          FlagFast,
	"movablekeys":   FlagMovableKeys,
	"no_auth":       FlagNoAuth,
	"may_replicate": FlagMayReplicate,
	"skip_monitor":  FlagSkipMonitor,
	"no_multi":      FlagNoMulti,
	"allow_busy":    FlagAllowBusy,
}

// CommandInfo describes one command or subcommand.
type CommandInfo struct {
	Name                    string // lower case; subcommands as "config|get"
	Arity                   int    // Redis convention: N exact, -N at least N (counting the command name; for subcommands, counting name and subcommand)
	Flags                   Flags
	FirstKey, LastKey, Step int
	Subcommands             map[string]*CommandInfo // keyed by lower-case subcommand name ("get"); nil when none
	// Policy is how the proxy treats the command, attached by NewTable (rows.go).
	Policy Policy
}

// Has reports whether c carries every flag in f.
func (c *CommandInfo) Has(f Flags) bool { return c.Flags&f == f }

// CheckArity reports whether len(args) (args[0] is the command name) satisfies Arity.
// An Arity of 0 (unknown, which Redis never reports) accepts any non-empty command.
func (c *CommandInfo) CheckArity(nargs int) bool {
	switch {
	case c.Arity > 0:
		return nargs == c.Arity
	case c.Arity < 0:
		return nargs >= -c.Arity
	default:
		return nargs >= 1
	}
}

// KeyIndexes appends to dst the indexes in args (args[0] is the command name) of
// the keys of this command. Commands whose keys depend on their arguments are
// parsed the way Redis' own getkeys functions parse them, so the answer does not
// depend on the server having reported them as movablekeys. Malformed arguments
// give the keys that can be determined, possibly none.
func (c *CommandInfo) KeyIndexes(args [][]byte, dst []int) []int {
	switch c.Name {
	case "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro":
		return cmdNumKeys(args, 2, dst)
	case "zunionstore", "zinterstore", "zdiffstore":
		if len(args) > 1 {
			dst = append(dst, 1)
		}
		return cmdNumKeys(args, 2, dst)
	case "zunion", "zinter", "zdiff", "zintercard", "sintercard", "lmpop", "zmpop":
		return cmdNumKeys(args, 1, dst)
	case "blmpop", "bzmpop":
		return cmdNumKeys(args, 2, dst)
	case "xread", "xreadgroup":
		return cmdStreamKeys(args, dst)
	case "sort":
		return cmdSortKeys(args, dst)
	case "sort_ro":
		if len(args) > 1 {
			dst = append(dst, 1)
		}
		return dst
	case "migrate":
		// MIGRATE moves keys off the server: the proxy never forwards it, and its
		// keys (one, or a KEYS list) are not keys of this server afterwards.
		return dst
	case "georadius", "georadiusbymember":
		return cmdGeoRadiusKeys(args, dst)
	}
	return cmdRangeKeys(args, c.FirstKey, c.LastKey, c.Step, dst)
}

// KeysAtPositions reports whether KeyIndexes finds c's keys at its legacy
// (FirstKey, LastKey, Step) positions whatever the arguments: false for the
// commands KeyIndexes parses and for those the server reports as movablekeys.
func (c *CommandInfo) KeysAtPositions() bool {
	switch c.Name {
	case "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro",
		"zunionstore", "zinterstore", "zdiffstore", "zunion", "zinter", "zdiff",
		"zintercard", "sintercard", "lmpop", "zmpop", "blmpop", "bzmpop",
		"xread", "xreadgroup", "sort", "sort_ro", "migrate", "georadius", "georadiusbymember":
		return false
	}
	return !c.Has(FlagMovableKeys)
}

// cmdRangeKeys appends the keys given by a legacy (first, last, step) triple.
func cmdRangeKeys(args [][]byte, first, last, step int, dst []int) []int {
	if first <= 0 {
		return dst
	}
	if last < 0 {
		last += len(args)
	}
	if last >= len(args) {
		last = len(args) - 1
	}
	if step <= 0 {
		step = 1
	}
	for i := first; i <= last; i += step {
		dst = append(dst, i)
	}
	return dst
}

// cmdNumKeys appends the keys of a "numkeys key [key ...]" argument list whose
// count is at args[at]. A count larger than the arguments left is clamped.
func cmdNumKeys(args [][]byte, at int, dst []int) []int {
	if at >= len(args) {
		return dst
	}
	n, ok := cmdParseCount(args[at])
	if !ok {
		return dst
	}
	first := at + 1
	if n > len(args)-first {
		n = len(args) - first
	}
	for i := first; i < first+n; i++ {
		dst = append(dst, i)
	}
	return dst
}

// cmdStreamKeys appends the keys of XREAD and XREADGROUP: the first half of the
// arguments after STREAMS, found by skipping the options the way Redis does
// (a group, consumer or key may itself be named "streams").
func cmdStreamKeys(args [][]byte, dst []int) []int {
	pos := -1
scan:
	for i := 1; i < len(args); i++ {
		switch {
		case cmdIs(args[i], "block"), cmdIs(args[i], "count"):
			i++
		case cmdIs(args[i], "group"):
			i += 2
		case cmdIs(args[i], "noack"):
		case cmdIs(args[i], "streams"):
			pos = i
			break scan
		default:
			break scan
		}
	}
	if pos < 0 {
		return dst
	}
	n := len(args) - pos - 1
	if n == 0 || n%2 != 0 {
		// Keys and IDs do not pair up: Redis refuses the command.
		return dst
	}
	for i := pos + 1; i <= pos+n/2; i++ {
		dst = append(dst, i)
	}
	return dst
}

// cmdSortKeys appends the keys of SORT: the sorted key and the destination of
// the last STORE option. BY and GET patterns are not keys of their own.
func cmdSortKeys(args [][]byte, dst []int) []int {
	if len(args) < 2 {
		return dst
	}
	dst = append(dst, 1)
	store := -1
	for i := 2; i < len(args); i++ {
		switch {
		case cmdIs(args[i], "limit"):
			i += 2
		case cmdIs(args[i], "get"), cmdIs(args[i], "by"):
			i++
		case cmdIs(args[i], "store") && i+1 < len(args):
			store = i + 1
		}
	}
	if store > 0 {
		dst = append(dst, store)
	}
	return dst
}

// cmdGeoRadiusKeys appends the keys of GEORADIUS and GEORADIUSBYMEMBER: the key
// and the destination of the last STORE or STOREDIST option.
func cmdGeoRadiusKeys(args [][]byte, dst []int) []int {
	if len(args) < 2 {
		return dst
	}
	dst = append(dst, 1)
	store := -1
	// Options start at 6 for GEORADIUS and at 5 for GEORADIUSBYMEMBER; Redis scans
	// from 5 for both.
	for i := 5; i < len(args); i++ {
		if (cmdIs(args[i], "store") || cmdIs(args[i], "storedist")) && i+1 < len(args) {
			store = i + 1
			i++
		}
	}
	if store > 0 {
		dst = append(dst, store)
	}
	return dst
}

// cmdIs reports whether arg equals the lower-case word, ignoring case.
func cmdIs(arg []byte, word string) bool {
	if len(arg) != len(word) {
		return false
	}
	for i := 0; i < len(arg); i++ {
		b := arg[i]
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if b != word[i] {
			return false
		}
	}
	return true
}

// cmdParseCount parses a non-negative decimal count; it refuses signs, empty
// input and values that would not fit an int.
func cmdParseCount(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	n := 0
	for _, d := range b {
		if d < '0' || d > '9' {
			return 0, false
		}
		n = n*10 + int(d-'0')
	}
	return n, true
}

// Table maps command names to their info. It is immutable once built and safe
// for concurrent use.
type Table struct {
	cmds   map[string]*CommandInfo
	names  []string // sorted top-level names
	maxLen int      // longest top-level or subcommand name, to reject long input early
}

// cmdBufLen is the size of the stack buffer Lookup lower-cases names into; the
// longest Redis 7 name is 20 bytes (29 with its container).
const cmdBufLen = 64

// NewTable builds a Table from top-level command infos, keyed by lower-cased
// Name; a later duplicate replaces an earlier one and nil entries are skipped.
// The Table keeps the infos: they must not be modified afterwards.
func NewTable(infos []*CommandInfo) *Table {
	t := &Table{cmds: make(map[string]*CommandInfo, len(infos))}
	for _, c := range infos {
		if c == nil {
			continue
		}
		name := strings.ToLower(c.Name)
		attachPolicies(c)
		t.cmds[name] = c
		t.maxLen = max(t.maxLen, len(name))
		for sub := range c.Subcommands {
			t.maxLen = max(t.maxLen, len(sub))
		}
	}
	t.names = make([]string, 0, len(t.cmds))
	for name := range t.cmds {
		t.names = append(t.names, name)
	}
	sort.Strings(t.names)
	return t
}

// CompleteFromBuiltin fills in what a master's COMMAND reply lacks: a command
// the reply gives without subcommands (Redis before 7.0, miniredis, some
// Redis-compatible servers) takes the built-in row of Redis 7.0 with them, so
// that CLIENT LIST, CONFIG GET, SCRIPT FLUSH ... are served by their own rows.
// Commands the master does not report are left out (it does not implement
// them), except those the proxy answers itself (HELLO, AUTH, RESET ...: rows of
// class local), which a client may send whatever the master.
func CompleteFromBuiltin(infos []*CommandInfo) []*CommandInfo {
	reported := make(map[string]bool, len(infos))
	for _, c := range infos {
		if c != nil {
			reported[strings.ToLower(c.Name)] = true
		}
	}
	for j := range tableBuiltin {
		b := &tableBuiltin[j]
		if r, ok := rows[b.name]; ok && r.Class == ClassLocal && !reported[b.name] {
			infos = append(infos, b.info(""))
		}
	}
	var builtin map[string]*cmdSpec
	for i, c := range infos {
		if c == nil || len(c.Subcommands) > 0 {
			continue
		}
		if builtin == nil {
			builtin = make(map[string]*cmdSpec, len(tableBuiltin))
			for j := range tableBuiltin {
				builtin[tableBuiltin[j].name] = &tableBuiltin[j]
			}
		}
		if b := builtin[strings.ToLower(c.Name)]; b != nil && len(b.subs) > 0 {
			infos[i] = b.info("")
		}
	}
	return infos
}

// BuiltinTable returns the table of Redis 7.0's commands, for masters that do not
// implement COMMAND (miniredis, some Redis-compatible servers).
func BuiltinTable() *Table {
	infos := make([]*CommandInfo, len(tableBuiltin))
	for i := range tableBuiltin {
		infos[i] = tableBuiltin[i].info("")
	}
	return NewTable(infos)
}

// cmdSpec is the compact, pointer-free form of a CommandInfo that
// commands_builtin.go is written in, so the built-in table is static data.
type cmdSpec struct {
	name              string // for subcommands, without the container prefix
	arity             int
	flags             Flags
	first, last, step int
	subs              []cmdSpec
}

// info returns a fresh CommandInfo for s; container is the parent's name, or "".
func (s *cmdSpec) info(container string) *CommandInfo {
	c := &CommandInfo{
		Name:     s.name,
		Arity:    s.arity,
		Flags:    s.flags,
		FirstKey: s.first,
		LastKey:  s.last,
		Step:     s.step,
	}
	if container != "" {
		c.Name = container + "|" + s.name
	}
	if len(s.subs) > 0 {
		c.Subcommands = make(map[string]*CommandInfo, len(s.subs))
		for i := range s.subs {
			c.Subcommands[s.subs[i].name] = s.subs[i].info(c.Name)
		}
	}
	return c
}

// Lookup resolves args[0] case-insensitively, without allocating. For a command
// with subcommands (CONFIG, CLIENT, OBJECT, XINFO, ...) it resolves args[1] when
// present and known, and returns the container's info otherwise. It returns nil
// for an unknown command.
func (t *Table) Lookup(args [][]byte) *CommandInfo {
	if len(args) == 0 {
		return nil
	}
	c := t.lookup(t.cmds, args[0])
	if c == nil || c.Subcommands == nil || len(args) < 2 {
		return c
	}
	if sub := t.lookup(c.Subcommands, args[1]); sub != nil {
		return sub
	}
	return c
}

// lookup finds name in m ignoring case. The map index with string(buf) does not
// allocate; only names longer than the stack buffer and than some known name
// fall back to an allocating conversion, which cannot happen with Redis' names.
func (t *Table) lookup(m map[string]*CommandInfo, name []byte) *CommandInfo {
	if len(name) == 0 || len(name) > t.maxLen {
		return nil
	}
	if len(name) > cmdBufLen {
		return m[string(bytes.ToLower(name))]
	}
	var buf [cmdBufLen]byte
	for i, b := range name {
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		buf[i] = b
	}
	return m[string(buf[:len(name)])]
}

// Len returns the number of top-level commands.
func (t *Table) Len() int { return len(t.cmds) }

// Names returns the sorted top-level command names.
func (t *Table) Names() []string { return append([]string(nil), t.names...) }

// ParseCommandReply builds command infos from a COMMAND reply as redigo decodes
// it. It accepts the shapes of Redis 2.8 to 7 (6 to 10 fields per command;
// subcommands from Redis 7) and returns an error for anything else.
func ParseCommandReply(reply interface{}) ([]*CommandInfo, error) {
	items, ok := reply.([]interface{})
	if !ok {
		return nil, fmt.Errorf("router: COMMAND reply is %T, not an array", reply)
	}
	infos := make([]*CommandInfo, 0, len(items))
	for i, item := range items {
		c, err := cmdParseInfo(item, "")
		if err != nil {
			return nil, fmt.Errorf("router: COMMAND reply entry %d: %w", i, err)
		}
		infos = append(infos, c)
	}
	return infos, nil
}

// cmdParseInfo parses one command entry; container is the parent's name for a
// subcommand, or "". Errors are wrapped with the "router: " prefix by the caller.
func cmdParseInfo(item interface{}, container string) (*CommandInfo, error) {
	fields, ok := item.([]interface{})
	if !ok {
		return nil, fmt.Errorf("entry is %T, not an array", item)
	}
	if len(fields) < 6 {
		return nil, fmt.Errorf("entry has %d fields, want at least 6", len(fields))
	}
	name, ok := cmdString(fields[0])
	if !ok || name == "" {
		return nil, fmt.Errorf("bad command name %v", fields[0])
	}
	c := &CommandInfo{Name: strings.ToLower(name)}
	if container != "" {
		// Redis names subcommands "container|sub"; accept a bare "sub" too.
		sub := c.Name[strings.LastIndexByte(c.Name, '|')+1:]
		if sub == "" {
			return nil, fmt.Errorf("bad subcommand name %q", name)
		}
		c.Name = container + "|" + sub
	}
	ints := [4]*int{&c.Arity, &c.FirstKey, &c.LastKey, &c.Step}
	for i, at := range [4]int{1, 3, 4, 5} {
		n, ok := fields[at].(int64)
		if !ok || n != int64(int32(n)) {
			return nil, fmt.Errorf("%s: field %d is %v, not a small integer", c.Name, at, fields[at])
		}
		*ints[i] = int(n)
	}
	flags, ok := fields[2].([]interface{})
	if !ok {
		return nil, fmt.Errorf("%s: flags are %T, not an array", c.Name, fields[2])
	}
	for _, f := range flags {
		s, ok := cmdString(f)
		if !ok {
			return nil, fmt.Errorf("%s: flag %v is not a string", c.Name, f)
		}
		// Redis 6.0 spelled a few flags with dashes in its sources; accept both.
		c.Flags |= cmdFlagNames[strings.ReplaceAll(strings.ToLower(s), "-", "_")]
	}
	if len(fields) < 10 || fields[9] == nil {
		return c, nil
	}
	subs, ok := fields[9].([]interface{})
	if !ok {
		return nil, fmt.Errorf("%s: subcommands are %T, not an array", c.Name, fields[9])
	}
	if container != "" && len(subs) > 0 {
		return nil, fmt.Errorf("%s: subcommands nested deeper than one level", c.Name)
	}
	for _, item := range subs {
		sub, err := cmdParseInfo(item, c.Name)
		if err != nil {
			return nil, err
		}
		if c.Subcommands == nil {
			c.Subcommands = make(map[string]*CommandInfo, len(subs))
		}
		c.Subcommands[sub.Name[len(c.Name)+1:]] = sub
	}
	return c, nil
}

// cmdString returns v as a string when it is a status ([]byte for bulk) reply.
func cmdString(v interface{}) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case []byte:
		return string(v), true
	}
	return "", false
}
