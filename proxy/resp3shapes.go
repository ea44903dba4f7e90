package proxy

import (
	"bytes"
	"strings"
)

// The RESP3 reply shapes of Redis 7.0's commands, where they differ from
// RESP2 beyond nulls: read off a redis-server 7.0 answering the same commands
// to a RESP2 and a RESP3 client (the differential tests in internal/e2e check
// them). Commands not named here keep their RESP2 types.

var (
	double    = &shape{kind: shapeDouble}
	verbatim  = &shape{kind: shapeVerbatim}
	set       = &shape{kind: shapeSet}
	flatMap   = &shape{kind: shapeMap}
	mapsArray = &shape{elem: flatMap}
	// withScores: member, score, ... as [member, score] pairs.
	withScores = &shape{kind: shapePairs, elem: double}
	// geoPoint: [longitude, latitude], or a null for a missing member.
	geoPoint = &shape{elem: double}
	// memoryStats: doubles for ratios and percentages, a map for each db.N.
	memoryStats = &shape{kind: shapeMap, elem: &shape{kind: shapeStat}}
)

// commandInfo is one command of COMMAND / COMMAND INFO, subcommands included.
var commandInfo = func() *shape {
	keySpec := &shape{kind: shapeMap, fields: map[string]*shape{
		"flags": set, "begin_search": {kind: shapeMap, elem: flatMap}, "find_keys": {kind: shapeMap, elem: flatMap},
	}}
	info := &shape{kind: shapeTuple}
	// name arity flags first last step acl-categories tips key-specs subcommands
	info.items = []*shape{nil, nil, set, nil, nil, nil, set, set, {kind: shapeSet, elem: keySpec}, {kind: shapeSubcommands, elem: info}}
	return info
}()

// commandDocs is one command's COMMAND DOCS map, subcommands included.
var commandDocs = func() *shape {
	arg := &shape{kind: shapeMap}
	arg.fields = map[string]*shape{"flags": set, "arguments": {elem: arg}}
	docs := &shape{kind: shapeMap}
	docs.fields = map[string]*shape{
		"doc_flags": set, "history": set, "arguments": {elem: arg},
		"subcommands": {kind: shapeMap, elem: docs},
	}
	return docs
}()

// fixedShapes are the commands whose shape does not depend on their arguments,
// by their full name ("config|get").
var fixedShapes = map[string]*shape{
	"hgetall": flatMap, "config|get": flatMap, "client|trackinginfo": {kind: shapeMap, fields: map[string]*shape{"flags": set}},
	"smembers": set, "sinter": set, "sunion": set, "sdiff": set,
	"zscore": double, "zincrby": double, "zadd": double, "zmscore": {elem: double},
	"bzpopmin": {kind: shapeTuple, items: []*shape{nil, nil, double}},
	"bzpopmax": {kind: shapeTuple, items: []*shape{nil, nil, double}},
	"zmpop":    {kind: shapeTuple, items: []*shape{nil, {elem: &shape{kind: shapeTuple, items: []*shape{nil, double}}}}},
	"bzmpop":   {kind: shapeTuple, items: []*shape{nil, {elem: &shape{kind: shapeTuple, items: []*shape{nil, double}}}}},
	"geopos":   {elem: geoPoint},
	"xread":    {kind: shapeMapOfPairs}, "xreadgroup": {kind: shapeMapOfPairs},
	"xinfo|groups": mapsArray, "xinfo|consumers": mapsArray,
	"info": verbatim, "client|info": verbatim, "client|list": verbatim, "memory|doctor": verbatim,
	"latency|doctor": verbatim, "lolwut": verbatim, "memory|malloc-stats": verbatim,
	"memory|stats":  memoryStats,
	"function|list": {elem: &shape{kind: shapeMap, fields: map[string]*shape{"functions": {elem: &shape{kind: shapeMap, fields: map[string]*shape{"flags": set}}}}}},
	"function|stats": {kind: shapeMap, fields: map[string]*shape{
		"running_script": flatMap, "engines": {kind: shapeMap, elem: flatMap},
	}},
	"acl|getuser":       {kind: shapeMap, fields: map[string]*shape{"flags": set, "selectors": mapsArray}},
	"acl|log":           {elem: &shape{kind: shapeMap, fields: map[string]*shape{"age-seconds": double}}},
	"latency|histogram": {kind: shapeMap, elem: &shape{kind: shapeMap, fields: map[string]*shape{"histogram_usec": flatMap}}},
	"module|list":       mapsArray,
	"command":           {elem: commandInfo}, "command|info": {elem: commandInfo},
	"command|docs":            {kind: shapeMap, elem: commandDocs},
	"command|getkeysandflags": {elem: &shape{kind: shapeTuple, items: []*shape{nil, set}}},
}

// withScoresCmds reply member/score pairs when given WITHSCORES.
var withScoresCmds = map[string]bool{
	"zrange": true, "zrangebyscore": true, "zrevrange": true, "zrevrangebyscore": true,
	"zunion": true, "zinter": true, "zdiff": true, "zrandmember": true,
}

// geoCmds are the GEO searches: with WITHCOORD, each result ends with its point.
var geoCmds = map[string]bool{
	"georadius": true, "georadius_ro": true, "georadiusbymember": true,
	"georadiusbymember_ro": true, "geosearch": true,
}

// xinfoFull is XINFO STREAM ... FULL.
var xinfoFull = &shape{kind: shapeMap, fields: map[string]*shape{
	"groups": {elem: &shape{kind: shapeMap, fields: map[string]*shape{"consumers": mapsArray}}},
}}

// replyShape is the RESP3 shape of the reply to the command name (full name,
// lower case) with args; nil keeps the RESP2 types (nulls aside).
func replyShape(name string, args [][]byte) *shape {
	if sh, ok := fixedShapes[name]; ok {
		return sh
	}
	switch {
	case withScoresCmds[name]:
		if hasArg(args, "withscores") {
			return withScores
		}
	case geoCmds[name]:
		if hasArg(args, "withcoord") {
			return &shape{elem: &shape{kind: shapeLast, elem: geoPoint}}
		}
	case name == "zpopmin" || name == "zpopmax":
		if len(args) > 2 {
			return withScores
		}
		return &shape{kind: shapeTuple, items: []*shape{nil, double}}
	case name == "hrandfield":
		if hasArg(args, "withvalues") {
			return &shape{kind: shapePairs}
		}
	case name == "spop":
		if len(args) > 2 {
			return set
		}
	case name == "xinfo|stream":
		if hasArg(args, "full") {
			return xinfoFull
		}
		return flatMap
	case name == "lcs":
		if hasArg(args, "idx") {
			return flatMap
		}
	}
	return nil
}

// hasArg reports whether an argument after the command name is opt (any case).
func hasArg(args [][]byte, opt string) bool {
	for _, a := range args[min(1, len(args)):] {
		if len(a) == len(opt) && bytes.EqualFold(a, []byte(opt)) {
			return true
		}
	}
	return false
}

// rawShape is the shape of the reply to a command given as a RESP array of
// bulk strings (a queued transaction's command).
func rawShape(raw []byte) *shape {
	args := frameArgs(raw)
	if len(args) == 0 {
		return nil
	}
	name := strings.ToLower(string(args[0]))
	if len(args) > 1 {
		if sub := name + "|" + strings.ToLower(string(args[1])); hasSubShape(sub) {
			name = sub
		}
	}
	return replyShape(name, args)
}

// hasSubShape reports whether name (container|sub) has a shape of its own.
func hasSubShape(name string) bool {
	if _, ok := fixedShapes[name]; ok {
		return true
	}
	return name == "xinfo|stream"
}
