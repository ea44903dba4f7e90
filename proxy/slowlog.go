package proxy

import (
	"slices"
	"strconv"
	"strings"

	"github.com/tidwall/redcon"
)

// SLOWLOG through the proxy covers every backend: the master runs the writes
// and the slaves most reads, so each keeps part of the log.
//
//   - SLOWLOG GET [count]: every backend's entries, newest first (by their
//     timestamp, in seconds; a backend's own order kept among equal ones), at
//     most count (default 10, -1 for all). Redis numbers entries per server, so
//     the proxy renumbers them: an entry's id is its backend's id times the
//     number of backends, plus the backend's index (0 the master, then the
//     slaves in configuration order). An entry keeps its id from one call to the
//     next, and a backend's newer entries get higher ids.
//   - SLOWLOG LEN: the sum of every backend's length.
//   - SLOWLOG RESET: on every backend; the master's reply, or a slave's error.
//
// A slave that does not answer (down, or an error) is left out of GET and LEN.
// The entries show what the backends ran: the proxy's replication scripts for
// writes, the proxy's connections as the clients.

// slowlog dispatches SLOWLOG GET, LEN and RESET to the master and every slave.
func (sess *Session) slowlog(c *call) {
	sess.broadcast(c)
	if c.route.Info.Name != "slowlog|reset" {
		c.post = postSlowlog
	}
}

// slowlogReply merges the master's reply with the slaves' (c.bcast).
func slowlogReply(c *call, master []byte) []byte {
	if len(master) == 0 || master[0] == '-' {
		return master
	}
	replies := [][]byte{master}
	for _, br := range c.bcast.reqs {
		if !br.Failed && len(br.Reply) > 0 && br.Reply[0] != '-' {
			replies = append(replies, br.Reply)
		} else {
			replies = append(replies, nil)
		}
	}
	if c.route.Info.Name == "slowlog|len" {
		var sum int64
		for _, r := range replies {
			sum += respInt(r)
		}
		return redcon.AppendInt(nil, sum)
	}
	return mergeSlowlogs(replies, slowlogCount(c.cmd.Args))
}

// slowlogCount is SLOWLOG GET's count (the master checked it): -1 for all.
func slowlogCount(args [][]byte) int64 {
	if len(args) < 3 {
		return 10
	}
	n, err := strconv.ParseInt(string(args[2]), 10, 64)
	if err != nil {
		return 10
	}
	return n
}

// slowEntry is one entry of a backend's SLOWLOG GET reply.
type slowEntry struct {
	ts     int64
	id     int64    // as the proxy gives it
	fields [][]byte // the entry's fields after its id, as the backend gave them
}

// mergeSlowlogs merges SLOWLOG GET replies (nil: a backend left out), newest
// first, at most count entries (-1: all).
func mergeSlowlogs(replies [][]byte, count int64) []byte {
	n := int64(len(replies))
	var all []slowEntry
	for i, r := range replies {
		for _, e := range splitArray(r) {
			f := splitArray(e)
			if len(f) < 2 {
				continue
			}
			all = append(all, slowEntry{ts: respInt(f[1]), id: respInt(f[0])*n + int64(i), fields: f[1:]})
		}
	}
	slices.SortStableFunc(all, func(a, b slowEntry) int {
		switch {
		case a.ts > b.ts:
			return -1
		case a.ts < b.ts:
			return 1
		}
		return 0
	})
	if count >= 0 && int64(len(all)) > count {
		all = all[:count]
	}
	out := redcon.AppendArray(nil, len(all))
	for _, e := range all {
		out = redcon.AppendArray(out, 1+len(e.fields))
		out = redcon.AppendInt(out, e.id)
		for _, f := range e.fields {
			out = append(out, f...)
		}
	}
	return out
}

// respInt returns the value of a RESP integer frame, or 0.
func respInt(b []byte) int64 {
	if len(b) < 4 || b[0] != ':' {
		return 0
	}
	v, _ := strconv.ParseInt(strings.TrimSuffix(string(b[1:]), "\r\n"), 10, 64)
	return v
}
