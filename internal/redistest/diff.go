package redistest

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/gomodule/redigo/redis"
)

const (
	// numDBs is the number of databases compared: Redis' default "databases 16".
	numDBs = 16
	// MaxDiffs bounds the differences Diff describes; further ones are only counted.
	MaxDiffs = 20
	// IgnoredPrefix marks the proxy's own keys, which exist on the master only.
	IgnoredPrefix = "syncproxy:"

	scanCount   = 1000 // COUNT hint of each SCAN
	keyBatch    = 512  // keys per pipelined DIGEST-VALUE/PEXPIRETIME round trip
	showBytes   = 64   // bytes of a string value shown in a difference
	showMembers = 8    // members of a collection shown in a difference
)

// Diff compares a master with one slave: for every database 0..15 the set of keys (by
// SCAN) and, for each key, DEBUG DIGEST-VALUE and PEXPIRETIME, which must be equal.
// Keys starting with IgnoredPrefix are skipped. It returns readable differences, empty
// when the data are equal: at most MaxDiffs, then one line counting the rest. Both
// servers must allow DEBUG (Start enables it).
func Diff(master, slave string) ([]string, error) {
	mc, err := dial(master, ioTimeout)
	if err != nil {
		return nil, fmt.Errorf("redistest: diff: master %s: %w", master, err)
	}
	defer mc.Close()
	sc, err := dial(slave, ioTimeout)
	if err != nil {
		return nil, fmt.Errorf("redistest: diff: slave %s: %w", slave, err)
	}
	defer sc.Close()
	return diffConns(mc, sc, master, slave)
}

// DiffServers is Diff for two started servers, reached as the package reaches
// them: over TLS and with their --requirepass when they have one.
func DiffServers(master, slave *Server) ([]string, error) {
	mc, err := master.dialProbeIO()
	if err != nil {
		return nil, fmt.Errorf("redistest: diff: master %s: %w", master.Addr, err)
	}
	defer mc.Close()
	sc, err := slave.dialProbeIO()
	if err != nil {
		return nil, fmt.Errorf("redistest: diff: slave %s: %w", slave.Addr, err)
	}
	defer sc.Close()
	return diffConns(mc, sc, master.Addr, slave.Addr)
}

func diffConns(mc, sc redis.Conn, master, slave string) ([]string, error) {
	d := &differ{master: mc, slave: sc}
	for db := 0; db < numDBs; db++ {
		if err := d.compareDB(db); err != nil {
			return nil, fmt.Errorf("redistest: diff %s with %s, db %d: %w", master, slave, db, err)
		}
	}
	if d.more > 0 {
		d.diffs = append(d.diffs, fmt.Sprintf("... and %d more differences", d.more))
	}
	return d.diffs, nil
}

// differ accumulates the differences between two connections' data.
type differ struct {
	master, slave redis.Conn
	diffs         []string
	more          int // differences past MaxDiffs
}

// full reports whether MaxDiffs differences are described already, and then counts one.
func (d *differ) full() bool {
	if len(d.diffs) < MaxDiffs {
		return false
	}
	d.more++
	return true
}

func (d *differ) addf(db int, key, format string, args ...interface{}) {
	d.diffs = append(d.diffs, fmt.Sprintf("db %d: key %q ", db, key)+fmt.Sprintf(format, args...))
}

// compareDB selects db on both servers and compares keys, digests and expire times.
func (d *differ) compareDB(db int) error {
	for _, c := range []redis.Conn{d.master, d.slave} {
		if _, err := c.Do("SELECT", db); err != nil {
			return err
		}
	}
	mkeys, err := scanKeys(d.master)
	if err != nil {
		return fmt.Errorf("master: %w", err)
	}
	skeys, err := scanKeys(d.slave)
	if err != nil {
		return fmt.Errorf("slave: %w", err)
	}

	var onlyMaster, onlySlave, both []string
	for k := range mkeys {
		if skeys[k] {
			both = append(both, k)
		} else {
			onlyMaster = append(onlyMaster, k)
		}
	}
	for k := range skeys {
		if !mkeys[k] {
			onlySlave = append(onlySlave, k)
		}
	}
	sort.Strings(onlyMaster)
	sort.Strings(onlySlave)
	sort.Strings(both)

	for _, k := range onlyMaster {
		if !d.full() {
			d.addf(db, k, "only on master: %s", describe(d.master, k))
		}
	}
	for _, k := range onlySlave {
		if !d.full() {
			d.addf(db, k, "only on slave: %s", describe(d.slave, k))
		}
	}
	for len(both) > 0 {
		batch := both[:min(keyBatch, len(both))]
		both = both[len(batch):]
		minfo, err := keyInfos(d.master, batch)
		if err != nil {
			return fmt.Errorf("master: %w", err)
		}
		sinfo, err := keyInfos(d.slave, batch)
		if err != nil {
			return fmt.Errorf("slave: %w", err)
		}
		for i, k := range batch {
			m, s := minfo[i], sinfo[i]
			if m.pexpiretime != s.pexpiretime && !d.full() {
				d.addf(db, k, "expire differs: master PEXPIRETIME %d, slave %d", m.pexpiretime, s.pexpiretime)
			}
			if m.digest == s.digest {
				continue
			}
			mval, sval := describe(d.master, k), describe(d.slave, k)
			// The digest covers whether a key has an expire, so with an expire on one
			// side only it differs anyway: the value is reported only if it visibly
			// differs too. Equality stays exact, only the report is coarser.
			if (m.pexpiretime < 0) != (s.pexpiretime < 0) && mval == sval {
				continue
			}
			if !d.full() {
				d.addf(db, k, "value differs: master %s, slave %s", mval, sval)
			}
		}
	}
	return nil
}

// scanKeys returns the keys of the selected database, except the ignored ones.
func scanKeys(c redis.Conn) (map[string]bool, error) {
	keys := make(map[string]bool)
	cursor := "0"
	for {
		reply, err := redis.Values(c.Do("SCAN", cursor, "COUNT", scanCount))
		if err != nil {
			return nil, fmt.Errorf("SCAN: %w", err)
		}
		if len(reply) != 2 {
			return nil, fmt.Errorf("SCAN: unexpected reply %v", reply)
		}
		if cursor, err = redis.String(reply[0], nil); err != nil {
			return nil, fmt.Errorf("SCAN cursor: %w", err)
		}
		batch, err := redis.Strings(reply[1], nil)
		if err != nil {
			return nil, fmt.Errorf("SCAN keys: %w", err)
		}
		for _, k := range batch {
			if !strings.HasPrefix(k, IgnoredPrefix) {
				keys[k] = true
			}
		}
		if cursor == "0" {
			return keys, nil
		}
	}
}

// keyInfo is what Diff compares for a key present on both sides.
type keyInfo struct {
	digest      string // DEBUG DIGEST-VALUE: type, content, and whether an expire is set
	pexpiretime int64  // absolute ms; -1 without expire, -2 if the key vanished
}

// keyInfos fetches the keyInfo of each key in one pipelined round trip.
func keyInfos(c redis.Conn, keys []string) ([]keyInfo, error) {
	for _, k := range keys {
		if err := c.Send("DEBUG", "DIGEST-VALUE", k); err != nil {
			return nil, err
		}
		if err := c.Send("PEXPIRETIME", k); err != nil {
			return nil, err
		}
	}
	if err := c.Flush(); err != nil {
		return nil, err
	}
	infos := make([]keyInfo, len(keys))
	for i := range keys {
		digests, err := redis.Strings(c.Receive())
		if err != nil {
			return nil, fmt.Errorf("DEBUG DIGEST-VALUE (is DEBUG enabled?): %w", err)
		}
		if len(digests) != 1 {
			return nil, fmt.Errorf("DEBUG DIGEST-VALUE: %d digests for one key", len(digests))
		}
		infos[i].digest = digests[0]
		if infos[i].pexpiretime, err = redis.Int64(c.Receive()); err != nil {
			return nil, fmt.Errorf("PEXPIRETIME: %w", err)
		}
	}
	return infos, nil
}

// describe renders a key's value briefly for a difference report. It is best effort:
// a failure is shown in place of the value.
func describe(c redis.Conn, key string) string {
	typ, err := redis.String(c.Do("TYPE", key))
	if err != nil {
		return fmt.Sprintf("(TYPE: %v)", err)
	}
	var (
		n       int
		members []string
	)
	switch typ {
	case "none":
		return "(missing)"
	case "string":
		v, err := redis.Bytes(c.Do("GET", key))
		if err != nil {
			return fmt.Sprintf("string (GET: %v)", err)
		}
		return "string " + quote(string(v))
	case "list":
		n, err = redis.Int(c.Do("LLEN", key))
		if err == nil {
			members, err = redis.Strings(c.Do("LRANGE", key, 0, showMembers-1))
		}
	case "set":
		n, err = redis.Int(c.Do("SCARD", key))
		if err == nil && n <= showMembers {
			members, err = redis.Strings(c.Do("SMEMBERS", key))
			sort.Strings(members)
		}
	case "zset":
		n, err = redis.Int(c.Do("ZCARD", key))
		if err == nil {
			members, err = redis.Strings(c.Do("ZRANGE", key, 0, showMembers/2-1, "WITHSCORES"))
		}
	case "hash":
		n, err = redis.Int(c.Do("HLEN", key))
		if err == nil && n <= showMembers/2 {
			members, err = redis.Strings(c.Do("HGETALL", key))
		}
	case "stream":
		n, err = redis.Int(c.Do("XLEN", key))
	}
	if err != nil {
		return fmt.Sprintf("%s (%v)", typ, err)
	}
	s := typ + "(" + strconv.Itoa(n) + ")"
	if len(members) > 0 {
		quoted := make([]string, len(members))
		for i, m := range members {
			quoted[i] = quote(m)
		}
		s += " [" + strings.Join(quoted, " ") + "]"
	}
	return s
}

// quote renders a value as a Go string, cut after showBytes bytes.
func quote(v string) string {
	if len(v) <= showBytes {
		return strconv.Quote(v)
	}
	return strconv.Quote(v[:showBytes]) + fmt.Sprintf("...(%d bytes)", len(v))
}
