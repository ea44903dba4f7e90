package proxy

import (
	"bytes"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// The proxy counts in plain atomics on the request path and turns the counts into
// Prometheus metrics only when scraped (a Collector): serving a command costs an
// atomic add and a histogram bucket, never a label lookup.

// cmdStat counts one command (or subcommand, as "config|get").
type cmdStat struct {
	calls   atomic.Int64
	latency router.Histogram // from the batch's dispatch to its replies
}

// errorKinds are the error reply prefixes counted by kind; others count as OTHER
// (a script may make up any prefix: labels must stay bounded).
var errorKinds = []string{
	"ERR", "WRONGTYPE", "NOAUTH", "WRONGPASS", "NOPERM", "EXECABORT", "NOSCRIPT", "BUSY", "BUSYKEY",
	"BUSYGROUP", "NOGROUP", "LOADING", "NOPROTO", "OOM", "READONLY", "NOREPLICAS", "MASTERDOWN",
	"UNBLOCKED", "CROSSSLOT", "OTHER",
	"SYNCPROXY", // the proxy's own refusals: "-ERR syncproxy: ..."
	"BACKEND",   // a backend down, timed out or overloaded
}

const (
	errKindOther     = 19
	errKindSyncproxy = 20
	errKindBackend   = 21
)

var errorKindIndex = func() map[string]int {
	m := map[string]int{}
	for i, k := range errorKinds {
		m[k] = i
	}
	return m
}()

// metrics are the server's counters besides the router's and the replicator's.
type metrics struct {
	commands    map[*router.CommandInfo]*cmdStat // fixed at start: read without locks
	unknown     cmdStat                          // commands not in the table
	errors      [22]atomic.Int64
	connections atomic.Int64 // accepted
	rejected    atomic.Int64 // refused: max clients
	limitCuts   atomic.Int64 // disconnected by an input or output limit
	reloads     atomic.Int64 // configuration reloads applied (SIGHUP)
}

func newMetrics(table *router.Table) *metrics {
	m := &metrics{commands: map[*router.CommandInfo]*cmdStat{}}
	for _, name := range table.Names() {
		ci := table.Lookup([][]byte{[]byte(name)})
		m.commands[ci] = &cmdStat{}
		for _, sub := range ci.Subcommands {
			m.commands[sub] = &cmdStat{}
		}
	}
	return m
}

func (m *metrics) command(ci *router.CommandInfo) *cmdStat {
	if st, ok := m.commands[ci]; ok {
		return st
	}
	return &m.unknown
}

// replies counts n replies of the same command sent to a client, with the
// batch's latency; for a run of a batch's commands at once (one atomic add and
// one bucket per run, not per command).
func (m *metrics) replies(ci *router.CommandInfo, n int, d time.Duration) {
	if n == 0 {
		return
	}
	st := m.command(ci)
	st.calls.Add(int64(n))
	st.latency.ObserveN(d, n)
}

// replyError counts r's reply by kind when it is an error.
func (m *metrics) replyError(r *router.Request) {
	if len(r.Reply) > 0 && r.Reply[0] == '-' {
		m.errors[errorKind(r)].Add(1)
	}
}

func errorKind(r *router.Request) int {
	if r.Failed {
		return errKindBackend
	}
	reply := r.Reply[1:]
	if bytes.HasPrefix(reply, []byte("ERR syncproxy:")) {
		return errKindSyncproxy
	}
	end := 0
	for end < len(reply) && end < 16 && reply[end] != ' ' && reply[end] != '\r' {
		end++
	}
	if i, ok := errorKindIndex[string(reply[:end])]; ok && i < errKindOther {
		return i
	}
	return errKindOther
}

// collector exposes the server's state as Prometheus metrics.
type collector struct{ s *Server }

var (
	descCommands    = prometheus.NewDesc("syncproxy_commands_total", "Commands served, by command.", []string{"command"}, nil)
	descCmdLatency  = prometheus.NewDesc("syncproxy_command_duration_seconds", "Time from a command's dispatch to its reply being ready, by command.", []string{"command"}, nil)
	descErrors      = prometheus.NewDesc("syncproxy_errors_total", "Error replies sent to clients, by kind (the error's prefix; SYNCPROXY: the proxy's refusals; BACKEND: a backend down or timed out).", []string{"kind"}, nil)
	descClients     = prometheus.NewDesc("syncproxy_connected_clients", "Clients connected.", nil, nil)
	descBlocked     = prometheus.NewDesc("syncproxy_blocked_clients", "Clients waiting in a blocking command.", nil, nil)
	descConnections = prometheus.NewDesc("syncproxy_connections_total", "Client connections accepted.", nil, nil)
	descRejected    = prometheus.NewDesc("syncproxy_rejected_connections_total", "Client connections refused (max clients).", nil, nil)
	descLimitCuts   = prometheus.NewDesc("syncproxy_limit_disconnects_total", "Clients disconnected by an input or output limit.", nil, nil)
	descBackendUp   = prometheus.NewDesc("syncproxy_backend_up", "1 when at least one connection to the backend is up.", []string{"backend", "addr", "role"}, nil)
	descBackendReqs = prometheus.NewDesc("syncproxy_backend_requests_total", "Requests answered by the backend.", []string{"backend"}, nil)
	descBackendErrs = prometheus.NewDesc("syncproxy_backend_errors_total", "Requests failed by the proxy for the backend (down, timeout, queue full).", []string{"backend"}, nil)
	descBackendLat  = prometheus.NewDesc("syncproxy_backend_duration_seconds", "Time from a request's write to the backend to its reply.", []string{"backend"}, nil)
	descBackendOut  = prometheus.NewDesc("syncproxy_backend_outstanding", "Requests sent to the backend and not answered yet.", []string{"backend"}, nil)
	descSlaveState  = prometheus.NewDesc("syncproxy_slave_state", "1 for the slave's current state (down, resyncing, catching-up, online).", []string{"slave", "state"}, nil)
	descApplied     = prometheus.NewDesc("syncproxy_slave_applied_seq", "Sequence number of the last sync message the slave applied.", []string{"slave"}, nil)
	descLagMsgs     = prometheus.NewDesc("syncproxy_slave_lag_messages", "Sync messages the slave is behind the latest seen.", []string{"slave"}, nil)
	descLagMs       = prometheus.NewDesc("syncproxy_slave_lag_ms", "Age of the last applied message when it was applied, while behind.", []string{"slave"}, nil)
	descReads       = prometheus.NewDesc("syncproxy_slave_reads_total", "Reads served by the slave.", []string{"slave"}, nil)
	descResyncs     = prometheus.NewDesc("syncproxy_slave_resyncs_total", "Full resyncs of the slave.", []string{"slave"}, nil)
	descResyncWhy   = prometheus.NewDesc("syncproxy_slave_resync_reasons_total", "Full resyncs of the slave by reason (no-position, other-epoch, ahead-of-master, backlog-gone, unverified-apply).", []string{"slave", "reason"}, nil)
	descLease       = prometheus.NewDesc("syncproxy_slave_lease_held", "1 when this proxy holds the slave's lease and applies to it; 0 when it follows another proxy's applier.", []string{"slave"}, nil)
	descApplies     = prometheus.NewDesc("syncproxy_slave_apply_calls_total", "Apply script calls this proxy made that moved the slave's position.", []string{"slave"}, nil)
	descEvicting    = prometheus.NewDesc("syncproxy_slave_evicting", "1 when the slave was seen evicting keys of its own (INFO evicted_keys grew): out of the read set.", []string{"slave"}, nil)
	descCatchUps    = prometheus.NewDesc("syncproxy_slave_catchups_total", "Catch-ups of the slave from the backlog.", []string{"slave"}, nil)
	descLatestSeq   = prometheus.NewDesc("syncproxy_sync_latest_seq", "Latest sync message sequence number seen.", nil, nil)
	descSubscribed  = prometheus.NewDesc("syncproxy_sync_subscribed", "1 when the subscriber loop is subscribed to the sync channel, or on standby because this proxy needs no stream (it applies to no slave and no client waits on the stream).", nil, nil)
	descMasterReads = prometheus.NewDesc("syncproxy_master_reads_total", "Reads served by the master.", nil, nil)
	descReloads     = prometheus.NewDesc("syncproxy_config_reloads_total", "Configuration reloads applied (SIGHUP).", nil, nil)
	descSwitches    = prometheus.NewDesc("syncproxy_master_switches_total", "Master switches made on Sentinel's word.", nil, nil)
	descResets      = prometheus.NewDesc("syncproxy_master_resets_total", "Master resets seen: the master lost data the slaves held (restarted empty or from an older snapshot).", nil, nil)
	descResetKeys   = prometheus.NewDesc("syncproxy_master_reset_keys_dropped_total", "Keys emptied from slaves to match a reset master.", nil, nil)
	descEvictions   = prometheus.NewDesc("syncproxy_master_evictions_replicated_total", "Keys the master evicted that this proxy deleted on the slaves.", nil, nil)
	descCrossed     = prometheus.NewDesc("syncproxy_epochs_crossed_total", "Slaves moved to a new epoch without a resync after an eviction took the master's replication metadata.", nil, nil)
	descGapsFilled  = prometheus.NewDesc("syncproxy_backlog_gaps_filled_total", "Messages the master's backlog lost to an eviction before they were read, taken from the sync channel.", nil, nil)
	descNearHits    = prometheus.NewDesc("syncproxy_near_cache_hits_total", "GETs answered from the near cache.", nil, nil)
	descNearMisses  = prometheus.NewDesc("syncproxy_near_cache_misses_total", "GETs the near cache could not answer (sent to a backend).", nil, nil)
	descNearInval   = prometheus.NewDesc("syncproxy_near_cache_invalidations_total", "Near cache entries dropped because the sync stream reported a write to their key, a flush or a break.", nil, nil)
	descNearEvict   = prometheus.NewDesc("syncproxy_near_cache_evictions_total", "Near cache entries dropped to stay within --near-cache (least recently used first).", nil, nil)
	descNearBytes   = prometheus.NewDesc("syncproxy_near_cache_bytes", "Memory of the near cache's entries (keys, values and overhead).", nil, nil)
	descNearEntries = prometheus.NewDesc("syncproxy_near_cache_entries", "Entries in the near cache.", nil, nil)
	descResetHeld   = prometheus.NewDesc("syncproxy_master_reset_held", "1 while a master reset is held (--on-master-reset hold): writes refused until an operator confirms.", nil, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCommands, descCmdLatency, descErrors, descClients, descBlocked,
		descConnections, descRejected, descLimitCuts, descBackendUp, descBackendReqs, descBackendErrs, descBackendLat,
		descBackendOut, descSlaveState, descApplied, descLagMsgs, descLagMs, descReads, descResyncs, descResyncWhy, descLease, descApplies, descCatchUps, descEvicting,
		descLatestSeq, descSubscribed, descMasterReads, descReloads, descSwitches, descResets, descResetKeys, descResetHeld, descEvictions,
		descCrossed, descGapsFilled, descNearHits, descNearMisses, descNearInval, descNearEvict, descNearBytes, descNearEntries} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	e := emitter(ch)
	s := c.s
	e.commands(s.metrics)
	e.gauge(descClients, float64(s.clients.Load()))
	e.gauge(descBlocked, float64(s.waiters.n.Load()))
	e.backend(s.router.Master(), "master")
	for _, sl := range s.router.Slaves() {
		e.backend(sl.Backend, "slave")
		e.slave(sl)
	}
	e.sync(s)
	if s.near != nil {
		e.near(s.near.stats())
	}
}

// near emits the near cache's figures.
func (e emitter) near(st nearStats) {
	e.counter(descNearHits, st.hits)
	e.counter(descNearMisses, st.misses)
	e.counter(descNearInval, st.invalidations)
	e.counter(descNearEvict, st.evictions)
	e.gauge(descNearBytes, float64(st.bytes))
	e.gauge(descNearEntries, float64(st.entries))
}

// emitter sends the metrics of one Collect.
type emitter chan<- prometheus.Metric

func (e emitter) counter(d *prometheus.Desc, v int64, labels ...string) {
	e <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func (e emitter) gauge(d *prometheus.Desc, v float64, labels ...string) {
	e <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func (e emitter) flag(d *prometheus.Desc, on bool, labels ...string) {
	v := 0.0
	if on {
		v = 1
	}
	e.gauge(d, v, labels...)
}

func (e emitter) hist(d *prometheus.Desc, h *router.Histogram, labels ...string) {
	n, sum, buckets := h.Snapshot()
	e <- prometheus.MustNewConstHistogram(d, n, sum, buckets, labels...)
}

// commands emits the per-command counts and latencies, errors and connections.
func (e emitter) commands(m *metrics) {
	stat := func(name string, st *cmdStat) {
		if n := st.calls.Load(); n > 0 {
			e.counter(descCommands, n, name)
			e.hist(descCmdLatency, &st.latency, name)
		}
	}
	for ci, st := range m.commands {
		stat(ci.Name, st)
	}
	stat("unknown", &m.unknown)
	for i, kind := range errorKinds {
		if n := m.errors[i].Load(); n > 0 {
			e.counter(descErrors, n, kind)
		}
	}
	e.counter(descConnections, m.connections.Load())
	e.counter(descRejected, m.rejected.Load())
	e.counter(descLimitCuts, m.limitCuts.Load())
	e.counter(descReloads, m.reloads.Load())
}

func (e emitter) backend(b *router.Backend, role string) {
	e.flag(descBackendUp, b.Up(), b.Name(), b.Addr(), role)
	e.counter(descBackendReqs, b.Stats.Requests.Load(), b.Name())
	e.counter(descBackendErrs, b.Stats.Failed.Load(), b.Name())
	e.hist(descBackendLat, &b.Stats.Latency, b.Name())
	e.gauge(descBackendOut, float64(b.Outstanding.Load()), b.Name())
}

// slave emits a slave's replication state.
func (e emitter) slave(sl *router.Slave) {
	a := applierOf(sl)
	name := a.Name()
	cur := a.State()
	for _, st := range []replicate.State{replicate.StateDown, replicate.StateResyncing, replicate.StateCatchingUp, replicate.StateOnline} {
		e.flag(descSlaveState, st == cur, name, st.String())
	}
	e.gauge(descApplied, float64(a.Applied()), name)
	e.gauge(descLagMsgs, float64(a.LagMessages()), name)
	e.gauge(descLagMs, float64(a.LagMs()), name)
	e.counter(descReads, sl.Reads.Load(), name)
	e.counter(descResyncs, a.Resyncs(), name)
	for _, why := range replicate.ResyncReasons {
		e.counter(descResyncWhy, a.ResyncsFor(why), name, why.Label())
	}
	e.flag(descLease, a.Leader(), name)
	e.counter(descApplies, a.Applies(), name)
	e.counter(descCatchUps, a.CatchUps(), name)
	e.flag(descEvicting, a.Evicting(), name)
}

// sync emits the replicator's figures.
func (e emitter) sync(s *Server) {
	e.gauge(descLatestSeq, float64(s.repl.Latest()))
	e.flag(descSubscribed, s.repl.Subscribed())
	e.counter(descMasterReads, s.router.MasterReads.Load())
	var switches int64
	if w := s.sentinel; w != nil {
		switches = w.switches.Load()
	}
	e.counter(descSwitches, switches)
	e.counter(descResets, s.repl.MasterResets())
	e.counter(descResetKeys, s.repl.MasterResetKeysDropped())
	e.counter(descEvictions, s.repl.EvictionsReplicated())
	e.counter(descCrossed, s.repl.EpochsCrossed())
	e.counter(descGapsFilled, s.repl.GapsFilled())
	e.flag(descResetHeld, s.repl.MasterResetHeld())
}
