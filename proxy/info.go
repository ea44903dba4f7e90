package proxy

import (
	"bytes"
	"net"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/redcon"

	"github.com/syncproxy/syncproxy/replicate"
)

// infoMetaFreeBody runs INFO with its arguments (ARGV) and takes the replication
// metadata keys out of DB 0's count in the Keyspace section, as DBSIZE leaves
// them out; a DB 0 that holds nothing else has no line, as in Redis.
var infoMetaFreeBody = []byte(`local info = redis.call('INFO', unpack(ARGV))
redis.call('SELECT', 0)
local n = redis.call('EXISTS', '` + replicate.KeyEpoch + `', '` + replicate.KeySeq + `', '` + replicate.KeyBacklog + `')
if n == 0 then return info end
return (string.gsub(info, 'db0:keys=(%d+)([^\r]*)\r\n', function(k, rest)
  k = tonumber(k) - n
  if k <= 0 then return '' end
  return 'db0:keys=' .. k .. rest .. '\r\n'
end))`)

// infoMetaFree is INFO args as the EVAL_RO of infoMetaFreeBody.
func infoMetaFree(args [][]byte) []byte {
	cmd := append([][]byte{[]byte("EVAL_RO"), infoMetaFreeBody, []byte("0")}, args[1:]...)
	return buildCommand(cmd)
}

// wantsKeyspace reports whether INFO args shows the Keyspace section.
func wantsKeyspace(args [][]byte) bool {
	if len(args) == 1 {
		return true
	}
	for _, a := range args[1:] {
		switch strings.ToLower(string(a)) {
		case "keyspace", "default", "all", "everything":
			return true
		}
	}
	return false
}

// infoReply prepends the proxy's sections to the master's INFO reply. When the
// master answered with an error (it is down), the proxy's sections still answer.
func (sess *Session) infoReply(master []byte) []byte {
	body := []byte(nil)
	if len(master) > 0 && master[0] == '$' {
		if i := bytes.IndexByte(master, '\n'); i > 0 && len(master) >= i+3 {
			body = master[i+1 : len(master)-2]
		}
	}
	var b strings.Builder
	sess.s.writeInfo(&b)
	if len(body) > 0 {
		b.WriteString("\r\n")
		b.Write(sess.s.ownFields(body))
	}
	return redcon.AppendBulkString(nil, b.String())
}

// ownFields gives the master's INFO the proxy's values where a client means
// the server it is connected to: the port it listens on, its uptime, its
// clients (connected, blocked, the limit) and the commands it processed — the
// fields the "# Proxy" section also has. A parser that keeps one value per field
// (redis-py's info()) would otherwise read the master's.
func (s *Server) ownFields(body []byte) []byte {
	up := int64(time.Since(s.start).Seconds())
	own := map[string]string{
		"connected_clients":        strconv.FormatInt(s.clients.Load(), 10),
		"blocked_clients":          strconv.FormatInt(s.waiters.n.Load(), 10),
		"maxclients":               strconv.Itoa(s.config().MaxClients),
		"uptime_in_seconds":        strconv.FormatInt(up, 10),
		"uptime_in_days":           strconv.FormatInt(up/86400, 10),
		"total_commands_processed": strconv.FormatInt(s.commands.Load(), 10),
	}
	if a, ok := s.Addr().(*net.TCPAddr); ok {
		own["tcp_port"] = strconv.Itoa(a.Port)
	}
	lines := bytes.Split(body, []byte("\r\n"))
	for i, l := range lines {
		k, _, ok := bytes.Cut(l, []byte(":"))
		if v, mine := own[string(k)]; ok && mine {
			lines[i] = []byte(string(k) + ":" + v)
		}
	}
	return bytes.Join(lines, []byte("\r\n"))
}

// writeInfo writes the "# Proxy" and "# Sync" sections.
func (s *Server) writeInfo(b *strings.Builder) {
	field := func(k, v string) {
		b.WriteString(k)
		b.WriteByte(':')
		b.WriteString(v)
		b.WriteString("\r\n")
	}
	b.WriteString("# Proxy\r\n")
	field("syncproxy_version", Version)
	field("uptime_in_seconds", strconv.FormatInt(int64(time.Since(s.start).Seconds()), 10))
	field("connected_clients", strconv.FormatInt(s.clients.Load(), 10))
	field("blocked_clients", strconv.FormatInt(s.waiters.n.Load(), 10))
	field("total_commands_processed", strconv.FormatInt(s.commands.Load(), 10))
	// The proxy process' own resources, from runtime/metrics (no stop-the-world,
	// unlike runtime.ReadMemStats: monitoring may send INFO often).
	rt := []rtmetrics.Sample{
		{Name: "/sched/goroutines:goroutines"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
	}
	rtmetrics.Read(rt)
	field("goroutines", strconv.FormatUint(rt[0].Value.Uint64(), 10))
	field("heap_alloc_bytes", strconv.FormatUint(rt[1].Value.Uint64(), 10))
	field("heap_inuse_bytes", strconv.FormatUint(rt[1].Value.Uint64()+rt[2].Value.Uint64(), 10))
	field("stack_inuse_bytes", strconv.FormatUint(rt[3].Value.Uint64(), 10))
	m := s.router.Master()
	field("master", "addr="+s.MasterAddr()+",up="+strconv.FormatBool(m.Up()))
	if w := s.sentinel; w != nil {
		field("sentinel", "master_name="+w.name+",sentinels="+strconv.Itoa(len(w.addrs))+
			",config_epoch="+strconv.FormatInt(w.epoch.Load(), 10)+",switches="+strconv.FormatInt(w.switches.Load(), 10)+
			",writes_held="+strconv.FormatBool(m.Paused()))
	}
	field("master_reads", strconv.FormatInt(s.router.MasterReads.Load(), 10))
	field("read_consistency", s.config().readLevel().String())
	field("global_reads", "batches="+strconv.FormatInt(s.masterPos.reads.Load(), 10)+
		",position_fetches="+strconv.FormatInt(s.masterPos.fetches.Load(), 10))
	field("sync_channel", s.cfg.SyncChannel)
	if nc := s.near; nc != nil {
		st := nc.stats()
		b.WriteString("\r\n# NearCache\r\n")
		field("near_cache_hits", strconv.FormatInt(st.hits, 10))
		field("near_cache_misses", strconv.FormatInt(st.misses, 10))
		field("near_cache_invalidations", strconv.FormatInt(st.invalidations, 10))
		field("near_cache_evictions", strconv.FormatInt(st.evictions, 10))
		field("near_cache_entries", strconv.FormatInt(st.entries, 10))
		field("near_cache_bytes", strconv.FormatInt(st.bytes, 10))
		field("near_cache_max_bytes", strconv.FormatInt(st.maxBytes, 10))
	}
	b.WriteString("\r\n# Sync\r\n")
	field("sync_latest_seq", strconv.FormatInt(s.repl.Latest(), 10))
	slaves := s.router.Slaves()
	field("sync_slaves", strconv.Itoa(len(slaves)))
	field("master_resets", strconv.FormatInt(s.repl.MasterResets(), 10))
	field("master_reset_held", strconv.FormatBool(s.repl.MasterResetHeld()))
	field("master_evictions_replicated", strconv.FormatInt(s.repl.EvictionsReplicated(), 10))
	field("epochs_crossed", strconv.FormatInt(s.repl.EpochsCrossed(), 10))
	field("backlog_gaps_filled", strconv.FormatInt(s.repl.GapsFilled(), 10))
	for i, sl := range slaves {
		a := applierOf(sl)
		copied, total := a.ResyncProgress()
		field("slave"+strconv.Itoa(i), "name="+a.Name()+
			",addr="+a.Addr()+
			",state="+a.State().String()+
			",up="+strconv.FormatBool(sl.Backend.Up())+
			",applied="+strconv.FormatInt(a.Applied(), 10)+
			",lag_messages="+strconv.FormatInt(a.LagMessages(), 10)+
			",lag_ms="+strconv.FormatInt(a.LagMs(), 10)+
			",reads="+strconv.FormatInt(sl.Reads.Load(), 10)+
			",resyncs="+strconv.FormatInt(a.Resyncs(), 10)+
			",catchups="+strconv.FormatInt(a.CatchUps(), 10)+
			",evicting="+strconv.FormatBool(a.Evicting())+
			",role="+role(a)+
			",resync_keys_copied="+strconv.FormatInt(copied, 10)+",resync_keys_total="+strconv.FormatInt(total, 10))
	}
}

// role is "applier" when this proxy holds the slave's lease and applies to it,
// "follower" when another proxy's applier does.
func role(a *replicate.Applier) string {
	if a.Leader() {
		return "applier"
	}
	return "follower"
}
