package check

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"github.com/syncproxy/syncproxy/internal/dial"
	"github.com/syncproxy/syncproxy/replicate"
)

// Defaults of Config.
const (
	// DefaultRate is the default bound on keys compared per second.
	DefaultRate = 20000
	// DefaultTimeout bounds dials and round trips of the checker.
	DefaultTimeout = 5 * time.Second
	// DefaultRecheckDelay is the first wait before a differing key is read again.
	DefaultRecheckDelay = 50 * time.Millisecond
	// DefaultAttempts is how many times a differing key is read before it is
	// reported as unsettled (the waits double: 50ms, 100ms, ... 800ms by default).
	DefaultAttempts = 6
	// MaxDiffs bounds the differences kept in a SlaveReport; all are counted
	// and passed to OnDiff.
	MaxDiffs = 10000

	checkBatchMax = 200 // keys per atomic read (MULTI) and per SCAN COUNT
	catchUpWait   = time.Second
	maxDedup      = 1 << 20 // keys remembered per slave and DB to report each once
)

// DiffKind says how a key differs between the master and a slave.
type DiffKind string

// The kinds of differences.
const (
	DiffMissing DiffKind = "missing" // on the master, not on the slave
	DiffExtra   DiffKind = "extra"   // on the slave, not on the master
	DiffType    DiffKind = "type"    // on both, of different types
	DiffValue   DiffKind = "value"   // same type, different values (the expiry may differ too)
	DiffTTL     DiffKind = "ttl"     // same value, different absolute expiry
	// DiffUnsettled is a key that differed at every read: it kept changing on
	// the master, or the slave stayed behind. It is not proven to differ.
	DiffUnsettled DiffKind = "unsettled"
)

// diffKinds is the order in which kinds are summed up.
var diffKinds = []DiffKind{DiffMissing, DiffExtra, DiffType, DiffValue, DiffTTL, DiffUnsettled}

// DiffKinds returns the kinds of differences in the order reports list them.
func DiffKinds() []DiffKind { return append([]DiffKind(nil), diffKinds...) }

// Diff is one key that differs between the master and a slave.
type Diff struct {
	Slave  string // slave name
	DB     int
	Key    string
	Kind   DiffKind
	Detail string
	// Repaired is set when Config.Repair copied the key again and a new read
	// found it equal; RepairErr says why not otherwise.
	Repaired  bool
	RepairErr string
}

// Phase is the part of a database's check in progress.
type Phase string

// The phases of a database's check.
const (
	PhaseCompare Phase = "compare" // the master's keys against every slave
	PhaseExtra   Phase = "extra"   // one slave's keys, looking for keys the master lacks
)

// Progress is passed to Config.OnProgress after every batch of keys.
type Progress struct {
	Phase     Phase
	Slaves    []string // every slave in the compare phase, one in the extra phase
	DB        int
	Done      int64 // keys of the DB handled
	Total     int64 // DBSIZE of the server scanned (the master, or the slave)
	Differing int64 // differences found so far on Slaves, all DBs
	// Elapsed is the time since this phase of the DB began, for a rate and an
	// estimate of the time left.
	Elapsed time.Duration
}

// Config configures Run.
type Config struct {
	Master replicate.Endpoint
	Slaves []replicate.Endpoint // Name defaults to slave-1, slave-2, ...
	// DBs lists the databases to compare; empty: every database that holds keys on
	// the master or on a slave (INFO keyspace).
	DBs []int
	// Rate bounds the keys handled per second (each is read from the master and from
	// the slaves); 0: no bound.
	Rate int
	// Repair copies each differing key from the master to its slave (DUMP and
	// RESTORE ... ABSTTL; DEL for an extra key) and verifies it.
	Repair bool
	// ByContent compares values by their content even where DEBUG DIGEST-VALUE is
	// available (it is used when every server allows DEBUG).
	ByContent bool
	// Timeout bounds dials and round trips (default DefaultTimeout).
	Timeout time.Duration
	// RecheckDelay and Attempts: a differing key is read again up to Attempts times,
	// waiting RecheckDelay, then twice as long each time.
	RecheckDelay time.Duration
	Attempts     int
	// OnDiff receives each difference once, after its repair when Repair is set.
	OnDiff func(Diff)
	// OnProgress receives the progress after every batch.
	OnProgress func(Progress)
	// Log receives warnings (a slave being resynced, DEBUG unavailable, ...).
	Log zerolog.Logger
}

// SlaveReport is the outcome of the check of one slave.
type SlaveReport struct {
	Name, Addr string
	Compared   int64              // master keys compared with this slave
	Scanned    int64              // slave keys looked up on the master
	Kinds      map[DiffKind]int64 // differences by kind
	Repaired   int64
	Diffs      []Diff // the first MaxDiffs differences
	Warnings   []string
}

// Differing returns the number of differing keys, unsettled ones included.
func (s *SlaveReport) Differing() int64 {
	var n int64
	for _, v := range s.Kinds {
		n += v
	}
	return n
}

// Remaining returns the number of differing keys not repaired.
func (s *SlaveReport) Remaining() int64 { return s.Differing() - s.Repaired }

// Report is the outcome of Run.
type Report struct {
	DBs    []int // databases compared
	Slaves []SlaveReport
	// Digest tells whether values were compared with DEBUG DIGEST-VALUE (else by content).
	Digest bool
}

// Clean reports whether every slave matches the master (after repairs, if any).
func (r *Report) Clean() bool {
	for i := range r.Slaves {
		if r.Slaves[i].Remaining() > 0 {
			return false
		}
	}
	return true
}

// ErrConfig is a Config that cannot be used.
var ErrConfig = errors.New("check: bad configuration")

// Run compares every slave with the master, key by key: existence, type, value
// and absolute expiry (PEXPIRETIME, so Redis 7 is needed). It scans with SCAN and
// paces itself to Config.Rate, so it does not block the servers.
//
// A key read differently is read again (master, slave, master) until the two reads
// of the master agree and, when the servers hold syncproxy's replication positions,
// the slave's position lies between the master's: only then is the difference
// certain, and not a write in flight. A key that never settles is reported as
// DiffUnsettled. The replication metadata (syncproxy:* in DB 0) is skipped.
//
// The error is about the servers (unreachable, failing); differences are in the
// report.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Master.Addr == "" || len(cfg.Slaves) == 0 {
		return Report{}, fmt.Errorf("%w: a master and at least one slave are needed", ErrConfig)
	}
	if cfg.Rate < 0 {
		return Report{}, fmt.Errorf("%w: negative rate", ErrConfig)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.RecheckDelay <= 0 {
		cfg.RecheckDelay = DefaultRecheckDelay
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = DefaultAttempts
	}
	ck := &checker{cfg: cfg, pace: pacer{rate: cfg.Rate}}
	defer ck.close()
	if err := ck.connect(ctx); err != nil {
		return Report{}, err
	}
	if err := ck.prepare(); err != nil {
		return Report{}, err
	}
	for _, db := range ck.dbs {
		if err := ck.checkDB(ctx, db); err != nil {
			return ck.report(), err
		}
	}
	return ck.report(), nil
}

// checker is the state of one Run; it runs in the caller's goroutine.
type checker struct {
	cfg    Config
	pace   pacer
	master *checkConn
	slaves []*slaveCheck
	dbs    []int
	digest bool // DEBUG DIGEST-VALUE everywhere
	batch  int
}

// slaveCheck is a slave's connection and its results.
type slaveCheck struct {
	conn     *checkConn
	res      SlaveReport
	noRepair string          // why this slave is not repaired, if it is not
	reported map[string]bool // keys of the current DB already reported
}

// checkConn is one connection and the DB it has selected.
type checkConn struct {
	name, addr string
	c          redis.Conn
	db         int
	master     bool
}

func (ck *checker) close() {
	if ck.master != nil {
		ck.master.c.Close()
	}
	for _, s := range ck.slaves {
		s.conn.c.Close()
	}
}

func (ck *checker) dial(ctx context.Context, e replicate.Endpoint) (redis.Conn, error) {
	t := e.DialTarget(ck.cfg.Timeout)
	t.Setup = [][]string{{"CLIENT", "SETNAME", "syncproxy-check"}}
	c, err := dial.Redigo(ctx, t, ck.cfg.Timeout, ck.cfg.Timeout)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	return c, nil
}

func (ck *checker) connect(ctx context.Context) error {
	if ck.cfg.Master.Name == "" {
		ck.cfg.Master.Name = "master"
	}
	c, err := ck.dial(ctx, ck.cfg.Master)
	if err != nil {
		return err
	}
	ck.master = &checkConn{name: ck.cfg.Master.Name, addr: ck.cfg.Master.Addr, c: c, master: true}
	for i, e := range ck.cfg.Slaves {
		if e.Name == "" {
			e.Name = "slave-" + strconv.Itoa(i+1)
		}
		c, err := ck.dial(ctx, e)
		if err != nil {
			return err
		}
		ck.slaves = append(ck.slaves, &slaveCheck{
			conn: &checkConn{name: e.Name, addr: e.Addr, c: c},
			res:  SlaveReport{Name: e.Name, Addr: e.Addr, Kinds: map[DiffKind]int64{}},
		})
	}
	return nil
}

// prepare chooses the DBs and the way values are compared, and looks at the
// slaves' replication state.
func (ck *checker) prepare() error {
	ck.batch = checkBatchMax
	if r := ck.cfg.Rate / 10; r > 0 && r < ck.batch {
		ck.batch = r // a batch is at most a tenth of a second's worth
	}
	conns := []*checkConn{ck.master}
	for _, s := range ck.slaves {
		conns = append(conns, s.conn)
	}
	dbs := map[int]bool{}
	ck.digest = !ck.cfg.ByContent
	for _, cc := range conns {
		info, err := redis.String(cc.c.Do("INFO", "keyspace"))
		if err != nil {
			return cc.errorf("INFO keyspace: %w", err)
		}
		for _, db := range replicate.KeyspaceDBs(info) {
			dbs[db] = true
		}
		if ck.digest {
			_, err := cc.c.Do("DEBUG", "DIGEST-VALUE", replicate.KeyPrefix+"check-probe")
			var rerr redis.Error
			if errors.As(err, &rerr) {
				ck.digest = false
				ck.cfg.Log.Info().Str("server", cc.name).Str("reply", rerr.Error()).
					Msg("DEBUG DIGEST-VALUE is not available: values are compared by content")
			} else if err != nil {
				return cc.errorf("DEBUG DIGEST-VALUE: %w", err)
			}
		}
	}
	if len(ck.cfg.DBs) > 0 {
		ck.dbs = append(ck.dbs, ck.cfg.DBs...)
	} else {
		for db := range dbs {
			ck.dbs = append(ck.dbs, db)
		}
	}
	sort.Ints(ck.dbs)

	mpos, err := ck.position(ck.master)
	if err != nil {
		return err
	}
	for _, s := range ck.slaves {
		lock, err := redis.Int(s.conn.c.Do("EXISTS", replicate.KeyResync))
		if err != nil {
			return s.conn.errorf("EXISTS %s: %w", replicate.KeyResync, err)
		}
		spos, err := ck.position(s.conn)
		if err != nil {
			return err
		}
		switch {
		case lock == 1:
			s.noRepair = "a proxy is resyncing this slave (" + replicate.KeyResync + " is set)"
			ck.warn(s, s.noRepair+": differences are expected until it ends; it is not repaired")
		case mpos.ok && (!spos.ok || spos.epoch != mpos.epoch):
			s.noRepair = "the slave holds no replication position of the master's data set"
			ck.warn(s, s.noRepair+": a proxy will copy it in full (FLUSHALL) when it connects; it is not repaired")
		}
	}
	return nil
}

func (ck *checker) warn(s *slaveCheck, msg string) {
	s.res.Warnings = append(s.res.Warnings, msg)
	ck.cfg.Log.Warn().Str("slave", s.conn.name).Str("addr", s.conn.addr).Msg(msg)
}

func (cc *checkConn) errorf(format string, args ...interface{}) error {
	return fmt.Errorf("check: %s %s: %w", cc.name, cc.addr, fmt.Errorf(format, args...))
}

func (cc *checkConn) selectDB(db int) error {
	if cc.db == db {
		return nil
	}
	if _, err := cc.c.Do("SELECT", db); err != nil {
		return cc.errorf("SELECT %d: %w", db, err)
	}
	cc.db = db
	return nil
}

// position is a server's replication position: the master's epoch and sequence
// number, or the slave's applied ones. ok is false when the server has none.
type position struct {
	epoch string
	seq   int64
	ok    bool
}

// positionCmds are the commands, for a MULTI, reading cc's position; they end
// with cc back in db.
func positionCmds(cc *checkConn, db int) [][]interface{} {
	cmds := [][]interface{}{{"SELECT", 0}}
	if cc.master {
		cmds = append(cmds, []interface{}{"GET", replicate.KeyEpoch}, []interface{}{"GET", replicate.KeySeq})
	} else {
		cmds = append(cmds, []interface{}{"GET", replicate.KeyApplied})
	}
	return append(cmds, []interface{}{"SELECT", db})
}

// parsePosition reads the replies of positionCmds (without the SELECTs).
func parsePosition(master bool, vals []interface{}) position {
	if master {
		epoch, err := redis.String(vals[0], nil)
		if err != nil {
			return position{}
		}
		seq, _ := redis.Int64(vals[1], nil)
		return position{epoch: epoch, seq: seq, ok: true}
	}
	v, err := redis.String(vals[0], nil)
	if err != nil {
		return position{}
	}
	i := strings.LastIndexByte(v, ':')
	if i <= 0 {
		return position{}
	}
	seq, err := strconv.ParseInt(v[i+1:], 10, 64)
	if err != nil {
		return position{}
	}
	return position{epoch: v[:i], seq: seq, ok: true}
}

// position reads cc's replication position.
func (ck *checker) position(cc *checkConn) (position, error) {
	db := cc.db
	cmds := positionCmds(cc, db)
	vals, err := multi(cc.c, cmds)
	if err != nil {
		return position{}, cc.errorf("position: %w", err)
	}
	return parsePosition(cc.master, vals[1:len(vals)-1]), nil
}

// keyState is what is compared of a key.
type keyState struct {
	typ   string // "none" when the key does not exist
	exp   int64  // PEXPIRETIME: -1 without expiry, -2 when missing
	token string // DEBUG DIGEST-VALUE, or a hash of the content
}

// snapshot is the state of a batch of keys, read atomically (MULTI) with the
// server's replication position.
type snapshot struct {
	pos    position
	states []keyState
	dumps  [][]byte // DUMP payloads, when asked for
}

// read reads the state of keys in db on cc, atomically. types, when given, are the
// expected types (for reading by content); otherwise they are read first.
func (ck *checker) read(cc *checkConn, db int, keys []string, types []string, dump bool) (snapshot, error) {
	if err := cc.selectDB(db); err != nil {
		return snapshot{}, err
	}
	if !ck.digest && types == nil {
		var err error
		if types, err = readTypes(cc.c, keys); err != nil {
			return snapshot{}, cc.errorf("TYPE: %w", err)
		}
	}
	cmds := positionCmds(cc, db)
	npos := len(cmds)
	cmds = ck.readCmds(cmds, keys, types, dump)
	vals, err := multi(cc.c, cmds)
	if err != nil {
		if strings.Contains(err.Error(), "PEXPIRETIME") {
			err = fmt.Errorf("%w (the checker needs Redis 7)", err)
		}
		return snapshot{}, cc.errorf("read: %w", err)
	}
	snap := snapshot{pos: parsePosition(cc.master, vals[1:npos-1]), states: make([]keyState, len(keys))}
	if err := ck.parseRead(cc, &snap, vals[npos:], types, dump); err != nil {
		return snapshot{}, err
	}
	return snap, nil
}

// readCmds appends to cmds the commands that read the state of keys (see read).
func (ck *checker) readCmds(cmds [][]interface{}, keys, types []string, dump bool) [][]interface{} {
	for _, k := range keys {
		cmds = append(cmds, []interface{}{"TYPE", k}, []interface{}{"PEXPIRETIME", k})
	}
	if ck.digest {
		args := []interface{}{"DEBUG", "DIGEST-VALUE"}
		for _, k := range keys {
			args = append(args, k)
		}
		cmds = append(cmds, args)
	} else {
		for i, k := range keys {
			cmds = append(cmds, contentCmd(types[i], k))
		}
	}
	if dump {
		for _, k := range keys {
			cmds = append(cmds, []interface{}{"DUMP", k})
		}
	}
	return cmds
}

// parseRead fills snap.states (and snap.dumps) from the replies to readCmds.
func (ck *checker) parseRead(cc *checkConn, snap *snapshot, vals []interface{}, types []string, dump bool) error {
	n := len(snap.states)
	for i := range snap.states {
		st := &snap.states[i]
		var err error
		if st.typ, err = redis.String(vals[2*i], nil); err != nil {
			return cc.errorf("TYPE: %w", err)
		}
		if st.exp, err = redis.Int64(vals[2*i+1], nil); err != nil {
			return cc.errorf("PEXPIRETIME: %w", err)
		}
	}
	vals = vals[2*n:]
	if ck.digest {
		digests, err := redis.Strings(vals[0], nil)
		if err != nil || len(digests) != n {
			return cc.errorf("DEBUG DIGEST-VALUE: %v", err)
		}
		for i := range snap.states {
			snap.states[i].token = digests[i]
		}
		vals = vals[1:]
	} else {
		for i := range snap.states {
			snap.states[i].token = contentToken(types[i], vals[i])
		}
		vals = vals[n:]
	}
	for i := range snap.states {
		if snap.states[i].typ == "none" {
			snap.states[i].token = ""
		}
	}
	if dump {
		snap.dumps = make([][]byte, n)
		for i := range snap.dumps {
			if b, ok := vals[i].([]byte); ok {
				snap.dumps[i] = b
			}
		}
	}
	return nil
}

// readTypes returns the types of keys (pipelined, not atomic).
func readTypes(c redis.Conn, keys []string) ([]string, error) {
	for _, k := range keys {
		if err := c.Send("TYPE", k); err != nil {
			return nil, err
		}
	}
	if err := c.Flush(); err != nil {
		return nil, err
	}
	types := make([]string, len(keys))
	var first error
	for i := range keys {
		t, err := redis.String(c.Receive())
		if err != nil && first == nil {
			first = err
		}
		types[i] = t
	}
	return types, first
}

// contentCmd returns the command that reads a key's whole value, for its type.
// Streams (and module types) are read with DUMP: their payload is compared.
func contentCmd(typ, key string) []interface{} {
	switch typ {
	case "string":
		return []interface{}{"GET", key}
	case "list":
		return []interface{}{"LRANGE", key, 0, -1}
	case "set":
		return []interface{}{"SMEMBERS", key}
	case "zset":
		return []interface{}{"ZRANGE", key, 0, -1, "WITHSCORES"}
	case "hash":
		return []interface{}{"HGETALL", key}
	case "none":
		return []interface{}{"EXISTS", key}
	}
	return []interface{}{"DUMP", key}
}

// contentToken hashes the reply of contentCmd into a value comparable between
// servers: sets and hashes are sorted, since their order depends on the server.
func contentToken(typ string, reply interface{}) string {
	if e, ok := reply.(redis.Error); ok {
		return "error: " + e.Error()
	}
	h := sha256.New()
	var lenBuf [binary.MaxVarintLen64]byte
	put := func(b []byte) {
		h.Write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(b)))])
		h.Write(b)
	}
	switch v := reply.(type) {
	case []byte:
		put(v)
	case int64:
		put(strconv.AppendInt(nil, v, 10))
	case []interface{}:
		items, _ := redis.ByteSlices(v, nil)
		switch typ {
		case "set":
			sort.Slice(items, func(i, j int) bool { return bytes.Compare(items[i], items[j]) < 0 })
		case "hash":
			pairs := make([][2][]byte, len(items)/2)
			for i := range pairs {
				pairs[i] = [2][]byte{items[2*i], items[2*i+1]}
			}
			sort.Slice(pairs, func(i, j int) bool { return bytes.Compare(pairs[i][0], pairs[j][0]) < 0 })
			for i, p := range pairs {
				items[2*i], items[2*i+1] = p[0], p[1]
			}
		}
		for _, it := range items {
			put(it)
		}
	case nil:
		return ""
	}
	return string(h.Sum(nil))
}

// multi runs cmds in one MULTI/EXEC round trip and returns EXEC's replies; an
// error reply while queuing aborts it.
func multi(c redis.Conn, cmds [][]interface{}) ([]interface{}, error) {
	if err := c.Send("MULTI"); err != nil {
		return nil, err
	}
	for _, cmd := range cmds {
		if err := c.Send(cmd[0].(string), cmd[1:]...); err != nil {
			return nil, err
		}
	}
	if err := c.Send("EXEC"); err != nil {
		return nil, err
	}
	if err := c.Flush(); err != nil {
		return nil, err
	}
	var first error
	for range len(cmds) + 1 {
		if _, err := c.Receive(); err != nil && first == nil {
			first = err
			var rerr redis.Error
			if !errors.As(err, &rerr) {
				return nil, err // the connection is broken
			}
		}
	}
	vals, err := redis.Values(c.Receive())
	if first != nil {
		return nil, first
	}
	if err != nil {
		return nil, err
	}
	if len(vals) != len(cmds) {
		return nil, fmt.Errorf("EXEC returned %d replies for %d commands", len(vals), len(cmds))
	}
	return vals, nil
}

// checkDB compares one database: the master's keys against every slave, then each
// slave's keys against the master.
func (ck *checker) checkDB(ctx context.Context, db int) error {
	for _, s := range ck.slaves {
		s.reported = map[string]bool{}
	}
	total, err := ck.dbSize(ck.master, db)
	if err != nil {
		return err
	}
	names := make([]string, len(ck.slaves))
	for i, s := range ck.slaves {
		names[i] = s.conn.name
	}
	var done int64
	start := time.Now()
	err = ck.scan(ctx, ck.master, db, func(keys []string, skipped int) error {
		done += int64(skipped)
		if len(keys) > 0 {
			if err := ck.compareBatch(ctx, db, keys); err != nil {
				return err
			}
		}
		done += int64(len(keys))
		ck.progress(PhaseCompare, names, db, done, total, start, ck.slaves)
		return nil
	})
	if err != nil {
		return err
	}
	for _, s := range ck.slaves {
		total, err := ck.dbSize(s.conn, db)
		if err != nil {
			return err
		}
		var done int64
		start := time.Now()
		err = ck.scan(ctx, s.conn, db, func(keys []string, skipped int) error {
			done += int64(skipped)
			if len(keys) > 0 {
				if err := ck.extraBatch(ctx, s, db, keys); err != nil {
					return err
				}
			}
			done += int64(len(keys))
			ck.progress(PhaseExtra, []string{s.conn.name}, db, done, total, start, []*slaveCheck{s})
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (ck *checker) progress(phase Phase, names []string, db int, done, total int64, start time.Time, slaves []*slaveCheck) {
	if ck.cfg.OnProgress == nil {
		return
	}
	p := Progress{Phase: phase, Slaves: names, DB: db, Done: done, Total: total, Elapsed: time.Since(start)}
	for _, s := range slaves {
		p.Differing += s.res.Differing()
	}
	ck.cfg.OnProgress(p)
}

func (ck *checker) dbSize(cc *checkConn, db int) (int64, error) {
	if err := cc.selectDB(db); err != nil {
		return 0, err
	}
	n, err := redis.Int64(cc.c.Do("DBSIZE"))
	if err != nil {
		return 0, cc.errorf("DBSIZE: %w", err)
	}
	return n, nil
}

// scan calls fn with the keys of db on cc, in batches of at most ck.batch paced to
// the rate, without the replication metadata (counted in skipped).
func (ck *checker) scan(ctx context.Context, cc *checkConn, db int, fn func(keys []string, skipped int) error) error {
	cursor := "0"
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := cc.selectDB(db); err != nil {
			return err
		}
		vals, err := redis.Values(cc.c.Do("SCAN", cursor, "COUNT", ck.batch))
		if err != nil {
			return cc.errorf("SCAN: %w", err)
		}
		if len(vals) != 2 {
			return cc.errorf("SCAN: unexpected reply")
		}
		cursor, _ = redis.String(vals[0], nil)
		page, err := redis.Strings(vals[1], nil)
		if err != nil {
			return cc.errorf("SCAN: %w", err)
		}
		keys, skipped := page[:0], 0
		for _, k := range page {
			if db == 0 && strings.HasPrefix(k, replicate.KeyPrefix) {
				skipped++
				continue
			}
			keys = append(keys, k)
		}
		for len(keys) > 0 || skipped > 0 {
			b := keys[:min(len(keys), ck.batch)]
			keys = keys[len(b):]
			if err := ck.pace.wait(ctx, len(b)); err != nil {
				return err
			}
			if err := fn(b, skipped); err != nil {
				return err
			}
			skipped = 0
		}
		if cursor == "0" {
			return nil
		}
	}
}

// compareBatch compares a batch of the master's keys with every slave.
func (ck *checker) compareBatch(ctx context.Context, db int, keys []string) error {
	m, err := ck.read(ck.master, db, keys, nil, false)
	if err != nil {
		return err
	}
	var types []string
	if !ck.digest {
		types = make([]string, len(keys))
		for i, st := range m.states {
			types[i] = st.typ
		}
	}
	for _, s := range ck.slaves {
		s.res.Compared += int64(len(keys))
		sv, err := ck.read(s.conn, db, keys, types, false)
		if err != nil {
			return err
		}
		var idx []int
		for i := range keys {
			if m.states[i] != sv.states[i] {
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 {
			continue
		}
		if err := ck.settleAndReport(ctx, s, db, pick(keys, idx), subset(m, idx), subset(sv, idx), PhaseCompare); err != nil {
			return err
		}
	}
	return nil
}

// extraBatch looks up a batch of a slave's keys on the master.
func (ck *checker) extraBatch(ctx context.Context, s *slaveCheck, db int, keys []string) error {
	s.res.Scanned += int64(len(keys))
	if err := ck.master.selectDB(db); err != nil {
		return err
	}
	for _, k := range keys {
		if err := ck.master.c.Send("EXISTS", k); err != nil {
			return ck.master.errorf("EXISTS: %w", err)
		}
	}
	if err := ck.master.c.Flush(); err != nil {
		return ck.master.errorf("EXISTS: %w", err)
	}
	var absent []string
	for _, k := range keys {
		n, err := redis.Int(ck.master.c.Receive())
		if err != nil {
			return ck.master.errorf("EXISTS: %w", err)
		}
		if n == 0 {
			absent = append(absent, k)
		}
	}
	if len(absent) == 0 {
		return nil
	}
	m, sv, idx, err := ck.differing(s.conn, db, absent)
	if err != nil {
		return err
	}
	if len(idx) == 0 {
		return nil
	}
	return ck.settleAndReport(ctx, s, db, pick(absent, idx), subset(m, idx), subset(sv, idx), PhaseExtra)
}

// differing reads keys' states on the master and on the slave (sc), and
// returns both with the indexes of the keys whose states differ.
func (ck *checker) differing(sc *checkConn, db int, keys []string) (m, sv snapshot, idx []int, err error) {
	if m, err = ck.read(ck.master, db, keys, nil, false); err != nil {
		return m, sv, nil, err
	}
	if sv, err = ck.read(sc, db, keys, nil, false); err != nil {
		return m, sv, nil, err
	}
	for i := range keys {
		if m.states[i] != sv.states[i] {
			idx = append(idx, i)
		}
	}
	return m, sv, idx, nil
}

func pick(keys []string, idx []int) []string {
	out := make([]string, len(idx))
	for i, j := range idx {
		out[i] = keys[j]
	}
	return out
}

func subset(s snapshot, idx []int) snapshot {
	out := snapshot{pos: s.pos, states: make([]keyState, len(idx))}
	for i, j := range idx {
		out.states[i] = s.states[j]
	}
	return out
}

// settled is the outcome of settle for one key.
type settled struct {
	key           string
	master, slave keyState
	reason        string // for an unsettled key
}

// settle reads keys again until each either matches, or certainly differs: the
// master's state is the same before (a) and after (b) the slave's read (s), and
// the slave's replication position lies between the master's two, so the slave
// was compared with exactly the master's value at its own position. Without
// positions (a server without syncproxy's metadata) the slave must also have been
// read again after a wait. Keys that do neither within the attempts are unsettled.
func (ck *checker) settle(ctx context.Context, s *slaveCheck, db int, keys []string, a, sv snapshot) (confirmed, unsettled []settled, err error) {
	delay := ck.cfg.RecheckDelay
	for attempt := 0; ; attempt++ {
		if err := ck.pace.wait(ctx, len(keys)); err != nil {
			return nil, nil, err
		}
		b, err := ck.read(ck.master, db, keys, nil, false)
		if err != nil {
			return nil, nil, err
		}
		known := sv.pos.ok && a.pos.ok && b.pos.ok && a.pos.epoch == sv.pos.epoch && b.pos.epoch == sv.pos.epoch
		between := known && a.pos.seq <= sv.pos.seq && sv.pos.seq <= b.pos.seq
		var next []int
		var reasons []string
		for i, k := range keys {
			if sv.states[i] == b.states[i] {
				continue // equal now: the difference was in flight
			}
			stable := a.states[i] == b.states[i]
			if stable && (between || (!known && attempt > 0)) {
				confirmed = append(confirmed, settled{key: k, master: b.states[i], slave: sv.states[i]})
				continue
			}
			reason := "the key kept changing on the master"
			if stable {
				reason = fmt.Sprintf("the slave stayed behind the master (applied %d, master at %d)", sv.pos.seq, b.pos.seq)
			}
			next = append(next, i)
			reasons = append(reasons, reason)
		}
		if len(next) == 0 {
			return confirmed, unsettled, nil
		}
		if attempt+1 >= ck.cfg.Attempts {
			for j, i := range next {
				unsettled = append(unsettled, settled{key: keys[i], master: b.states[i], slave: sv.states[i], reason: reasons[j]})
			}
			return confirmed, unsettled, nil
		}
		if !replicate.SleepCtx(ctx, delay) {
			return nil, nil, ctx.Err()
		}
		delay *= 2
		keys, a = pick(keys, next), subset(b, next)
		if sv, err = ck.read(s.conn, db, keys, nil, false); err != nil {
			return nil, nil, err
		}
	}
}

// settleAndReport settles differing keys, repairs the confirmed ones if asked, and
// reports each once.
func (ck *checker) settleAndReport(ctx context.Context, s *slaveCheck, db int, keys []string, a, sv snapshot, phase Phase) error {
	confirmed, unsettled, err := ck.settle(ctx, s, db, keys, a, sv)
	if err != nil {
		return err
	}
	var diffs []Diff
	for _, c := range confirmed {
		if phase == PhaseCompare && c.master.typ == "none" {
			continue // deleted on the master meanwhile: the extra phase sees it
		}
		kind, detail, err := ck.classify(s, db, c)
		if err != nil {
			return err
		}
		diffs = append(diffs, Diff{Slave: s.conn.name, DB: db, Key: c.key, Kind: kind, Detail: detail})
	}
	if ck.cfg.Repair && len(diffs) > 0 {
		if err := ck.repairDiffs(ctx, s, db, diffs); err != nil {
			return err
		}
	}
	for _, u := range unsettled {
		if phase == PhaseCompare && u.master.typ == "none" {
			continue
		}
		diffs = append(diffs, Diff{Slave: s.conn.name, DB: db, Key: u.key, Kind: DiffUnsettled,
			Detail: u.reason + "; master " + describeState(u.master) + ", slave " + describeState(u.slave)})
	}
	for _, d := range diffs {
		if s.reported[d.Key] {
			continue // SCAN returned it twice
		}
		if len(s.reported) < maxDedup {
			s.reported[d.Key] = true
		}
		s.res.Kinds[d.Kind]++
		if d.Repaired {
			s.res.Repaired++
		}
		if len(s.res.Diffs) < MaxDiffs {
			s.res.Diffs = append(s.res.Diffs, d)
		}
		if ck.cfg.OnDiff != nil {
			ck.cfg.OnDiff(d)
		}
	}
	return nil
}

// classify names a confirmed difference.
func (ck *checker) classify(s *slaveCheck, db int, c settled) (DiffKind, string, error) {
	m, sv := c.master, c.slave
	switch {
	case m.typ == "none":
		return DiffExtra, "only on the slave (" + sv.typ + ")", nil
	case sv.typ == "none":
		return DiffMissing, "only on the master (" + m.typ + ")", nil
	case m.typ != sv.typ:
		return DiffType, "master " + m.typ + ", slave " + sv.typ, nil
	}
	expDiff := m.exp != sv.exp
	valDiff := m.token != sv.token
	if valDiff && ck.digest && (m.exp < 0) != (sv.exp < 0) {
		// The digest covers whether a key expires: compare the content itself.
		mt, err := readContent(ck.master, db, c.key, m.typ)
		if err != nil {
			return "", "", err
		}
		st, err := readContent(s.conn, db, c.key, m.typ)
		if err != nil {
			return "", "", err
		}
		valDiff = mt != st
	}
	ttl := "expiry: master " + describeExp(m.exp) + ", slave " + describeExp(sv.exp)
	switch {
	case valDiff && expDiff:
		return DiffValue, m.typ + " values differ; " + ttl, nil
	case valDiff:
		return DiffValue, m.typ + " values differ", nil
	}
	return DiffTTL, ttl, nil
}

// readContent returns the content token of one key.
func readContent(cc *checkConn, db int, key, typ string) (string, error) {
	if err := cc.selectDB(db); err != nil {
		return "", err
	}
	cmd := contentCmd(typ, key)
	reply, err := cc.c.Do(cmd[0].(string), cmd[1:]...)
	var rerr redis.Error
	if err != nil && !errors.As(err, &rerr) {
		return "", cc.errorf("%s: %w", cmd[0], err)
	}
	if err != nil {
		reply = rerr
	}
	return contentToken(typ, reply), nil
}

func describeExp(ms int64) string {
	if ms < 0 {
		return "none"
	}
	return strconv.FormatInt(ms, 10) + " (" + time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z") + ")"
}

func describeState(st keyState) string {
	if st.typ == "none" {
		return "missing"
	}
	if st.exp < 0 {
		return st.typ + " without expiry"
	}
	return st.typ + " expiring at " + describeExp(st.exp)
}

// repairScript restores keys on a slave from the master's DUMP payloads, if the
// slave's position lies between the two master reads that found the keys
// unchanged (ARGV[1] the master's epoch, ARGV[2] and ARGV[3] the sequence numbers;
// an empty epoch: the master has no position, no check), so that the restored value
// is the master's at the slave's own position and the writes still to come apply
// on top of it. ARGV[4] is the DB; then per key its absolute expiry and payload
// (empty: delete). It refuses while a proxy resyncs the slave.
const repairScript = `
redis.call('SELECT', 0)
if redis.call('EXISTS', 'syncproxy:resync') == 1 then
  return redis.error_reply('ERR a proxy is resyncing this slave')
end
if ARGV[1] ~= '' then
  local cur = redis.call('GET', 'syncproxy:applied')
  if not cur then return {-1, 0} end
  local epoch, seq = string.match(cur, '^(.*):(%d+)$')
  if epoch ~= ARGV[1] then return {-1, 0} end
  seq = tonumber(seq)
  if seq < tonumber(ARGV[2]) or seq > tonumber(ARGV[3]) then return {-2, seq} end
end
redis.call('SELECT', tonumber(ARGV[4]))
for i, key in ipairs(KEYS) do
  local payload = ARGV[4 + 2 * i]
  if payload == '' then
    redis.call('DEL', key)
  else
    redis.call('RESTORE', key, ARGV[3 + 2 * i], payload, 'REPLACE', 'ABSTTL')
  end
end
return {#KEYS, 0}
`

var repairLua = redis.NewScript(-1, repairScript)

// repairDiffs copies the keys of diffs from the master to the slave, then reads
// them again and marks those now equal as repaired.
func (ck *checker) repairDiffs(ctx context.Context, s *slaveCheck, db int, diffs []Diff) error {
	if s.noRepair != "" {
		for i := range diffs {
			diffs[i].RepairErr = s.noRepair
		}
		return nil
	}
	keys := make([]string, len(diffs))
	for i, d := range diffs {
		keys[i] = d.Key
	}
	failed, err := ck.repair(ctx, s, db, keys)
	if err != nil {
		return err
	}
	var done []string
	for _, k := range keys {
		if failed[k] == "" {
			done = append(done, k)
		}
	}
	if len(done) > 0 {
		// Verify: the keys must now settle as equal.
		a, sv, idx, err := ck.differing(s.conn, db, done)
		if err != nil {
			return err
		}
		if len(idx) > 0 {
			confirmed, unsettled, err := ck.settle(ctx, s, db, pick(done, idx), subset(a, idx), subset(sv, idx))
			if err != nil {
				return err
			}
			for _, c := range confirmed {
				failed[c.key] = "still differs after the repair: master " + describeState(c.master) + ", slave " + describeState(c.slave)
			}
			for _, u := range unsettled {
				failed[u.key] = "not verified after the repair: " + u.reason
			}
		}
	}
	for i := range diffs {
		if msg := failed[diffs[i].Key]; msg != "" {
			diffs[i].RepairErr = msg
		} else {
			diffs[i].Repaired = true
		}
	}
	return nil
}

// repair restores keys on the slave with repairScript; it returns why keys were
// not restored.
func (ck *checker) repair(ctx context.Context, s *slaveCheck, db int, keys []string) (map[string]string, error) {
	failed := map[string]string{}
	delay := ck.cfg.RecheckDelay
	for attempt := 0; len(keys) > 0; attempt++ {
		if attempt == ck.cfg.Attempts {
			for _, k := range keys {
				failed[k] = "the key kept changing on the master, or the slave kept moving: run the check again"
			}
			break
		}
		if attempt > 0 {
			if !replicate.SleepCtx(ctx, delay) {
				return nil, ctx.Err()
			}
			delay *= 2
		}
		if err := ck.pace.wait(ctx, len(keys)); err != nil {
			return nil, err
		}
		a, err := ck.read(ck.master, db, keys, nil, true)
		if err != nil {
			return nil, err
		}
		epoch, lo, hi := "", int64(0), int64(0)
		stable := keys
		if a.pos.ok {
			if err := ck.waitApplied(ctx, s, a.pos); err != nil {
				return nil, err
			}
			b, err := ck.read(ck.master, db, keys, nil, false)
			if err != nil {
				return nil, err
			}
			epoch, lo, hi = a.pos.epoch, a.pos.seq, b.pos.seq
			if b.pos.epoch != epoch {
				continue
			}
			var idx, moving []int
			for i := range keys {
				if a.states[i] == b.states[i] {
					idx = append(idx, i)
				} else {
					moving = append(moving, i)
				}
			}
			stable = pick(keys, idx)
			a.states, a.dumps = pickStates(a.states, idx), pickDumps(a.dumps, idx)
			keys = pick(keys, moving)
		} else {
			keys = nil
		}
		if len(stable) == 0 {
			continue
		}
		var err2 error
		if keys, err2 = ck.restore(s, db, stable, a, epoch, lo, hi, keys, failed); err2 != nil {
			return nil, err2
		}
	}
	return failed, nil
}

// restore runs repairScript on the slave for the stable keys, read in a, whose
// master position was epoch lo..hi. Keys that failed go to failed; keys to read
// again (the slave moved on) are appended to again, which it returns.
func (ck *checker) restore(s *slaveCheck, db int, stable []string, a snapshot, epoch string, lo, hi int64,
	again []string, failed map[string]string) ([]string, error) {
	args := []interface{}{len(stable)}
	for _, k := range stable {
		args = append(args, k)
	}
	args = append(args, epoch, lo, hi, db)
	for i := range stable {
		args = append(args, max(a.states[i].exp, 0), a.dumps[i])
	}
	reply, err := redis.Int64s(repairLua.Do(s.conn.c, args...))
	var rerr redis.Error
	switch {
	case errors.As(err, &rerr):
		for _, k := range stable {
			failed[k] = rerr.Error()
		}
	case err != nil:
		return nil, s.conn.errorf("repair: %w", err)
	case len(reply) == 2 && reply[0] == -1:
		for _, k := range stable {
			failed[k] = "the slave holds no replication position of the master's data set"
		}
	case len(reply) == 2 && reply[0] == -2:
		again = append(again, stable...) // the slave moved on: read again
	}
	return again, nil
}

func pickStates(s []keyState, idx []int) []keyState {
	out := make([]keyState, len(idx))
	for i, j := range idx {
		out[i] = s[j]
	}
	return out
}

func pickDumps(d [][]byte, idx []int) [][]byte {
	out := make([][]byte, len(idx))
	for i, j := range idx {
		out[i] = d[j]
	}
	return out
}

// waitApplied waits, for a bounded time, until the slave applied pos.
func (ck *checker) waitApplied(ctx context.Context, s *slaveCheck, pos position) error {
	deadline := time.Now().Add(catchUpWait)
	for {
		p, err := ck.position(s.conn)
		if err != nil {
			return err
		}
		if !p.ok || p.epoch != pos.epoch || p.seq >= pos.seq || time.Now().After(deadline) {
			return nil
		}
		if !replicate.SleepCtx(ctx, 5*time.Millisecond) {
			return ctx.Err()
		}
	}
}

func (ck *checker) report() Report {
	r := Report{DBs: ck.dbs, Digest: ck.digest}
	for _, s := range ck.slaves {
		r.Slaves = append(r.Slaves, s.res)
	}
	return r
}

// pacer bounds a rate of keys per second: each batch waits until the previous
// batches' share of time has passed (a token bucket holding one batch).
type pacer struct {
	rate int // keys per second; 0: unbounded
	next time.Time
}

func (p *pacer) wait(ctx context.Context, n int) error {
	if p.rate <= 0 || n == 0 {
		return ctx.Err()
	}
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	d := p.next.Sub(now)
	p.next = p.next.Add(time.Duration(n) * time.Second / time.Duration(p.rate))
	if d > 0 && !replicate.SleepCtx(ctx, d) {
		return ctx.Err()
	}
	return ctx.Err()
}
