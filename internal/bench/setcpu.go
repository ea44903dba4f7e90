package main

import (
	"fmt"
	"strings"
	"time"
)

// The CPU of every process of a replicated SET run: the load generator, the
// master, the two slaves (or native replicas) and syncproxy. On a machine whose
// cores are all busy, throughput is about the cores divided by the sum, so the
// sums of the two sides, and syncproxy's side without the proxy process, show
// what bounds the SET ratio to native replication: how much is the proxy's own
// cost, and how much the replication scheme's cost on the Redis servers.

// setProcs are the columns of the breakdown, in order.
var setProcs = []string{"redis-benchmark", "master", "slave 1", "slave 2", "syncproxy"}

// setRunProcs returns, per column of setProcs, the bench's processes for a side
// of a SET run (none: not one of the bench's). With -proxy-bin, syncproxy's
// column adds the proxy that applies (startNeutralApplier).
func (b *bench) setRunProcs(side string) [][]*proc {
	one := func(name string) []*proc {
		if p := b.lastProc(name); p != nil {
			return []*proc{p}
		}
		return nil
	}
	switch side {
	case sideNative:
		return [][]*proc{nil, one("native-master"), one("native-replica-1"), one("native-replica-2"), nil}
	case sideProxy:
		proxies := one("syncproxy-applier")
		if b.proxyProc != nil {
			proxies = append(proxies, b.proxyProc)
		}
		return [][]*proc{nil, one("master"), one("slave-1"), one("slave-2"), proxies}
	}
	return nil
}

// procsCPU is the CPU time the processes of a SET run used so far, per column.
type procsCPU struct {
	procs [][]*proc
	used  []time.Duration
}

// columnCPU returns the CPU time the processes ps used so far; false when one
// cannot be read.
func columnCPU(ps []*proc) (time.Duration, bool) {
	var t time.Duration
	for _, p := range ps {
		used, ok := procCPU(p.cmd.Process.Pid)
		if !ok {
			return 0, false
		}
		t += used
	}
	return t, true
}

// startProcsCPU reads the CPU time of side's processes, for a SET run of a base
// cell against the native master or syncproxy; nil for any other run.
func (b *bench) startProcsCPU(c *cell, side string) *procsCPU {
	if c.kind != kindBase || c.test != "set" || (side != sideNative && side != sideProxy) {
		return nil
	}
	s := &procsCPU{procs: b.setRunProcs(side), used: make([]time.Duration, len(setProcs))}
	for i, ps := range s.procs {
		s.used[i], _ = columnCPU(ps)
	}
	return s
}

// stop records in c each process's CPU microseconds per request since
// startProcsCPU (redis-benchmark's from its last run), for side.
func (s *procsCPU) stop(b *bench, c *cell, side string, requests int) {
	if s == nil {
		return
	}
	if c.procs == nil {
		c.procs = map[string][][]float64{}
	}
	per := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(requests) }
	row := make([]float64, len(setProcs))
	row[0] = per(b.benchCPU)
	for i, ps := range s.procs {
		if len(ps) == 0 {
			continue
		}
		used, ok := columnCPU(ps)
		if !ok {
			return
		}
		row[i] = per(used - s.used[i])
	}
	c.procs[side] = append(c.procs[side], row)
}

// reportSetCPU prints the breakdown of the SET runs: per column the median over
// the rounds, the sum, and for syncproxy the sum without the proxy process.
func (b *bench) reportSetCPU(cells []*cell) {
	w := b.out
	fmt.Fprintf(w, "\nCPU per SET by process, in us (user+system over the run, syncproxy's until its slaves applied it; medians):\n"+
		"with every core busy, requests/s is about cores / total\n")
	fmt.Fprintf(w, "%-6s %4s %-8s", "test", "-P", "side")
	for _, n := range setProcs {
		fmt.Fprintf(w, " %15s", n)
	}
	fmt.Fprintf(w, " %8s %14s\n", "total", "without proxy")
	for _, c := range cells {
		native, proxy := medianRow(c.procs[sideNative]), medianRow(c.procs[sideProxy])
		if native == nil || proxy == nil {
			continue
		}
		for _, r := range []struct {
			side string
			row  []float64
		}{{"native", native}, {"proxy", proxy}} {
			fmt.Fprintf(w, "%-6s %4d %-8s", strings.ToUpper(c.test), c.pipe, r.side)
			total := 0.0
			for i, v := range r.row {
				total += v
				if r.side == "native" && i == len(setProcs)-1 {
					fmt.Fprintf(w, " %15s", "-")
				} else {
					fmt.Fprintf(w, " %15.2f", v)
				}
			}
			fmt.Fprintf(w, " %8.2f", total)
			if r.side == "proxy" {
				fmt.Fprintf(w, " %14.2f", total-r.row[len(setProcs)-1])
			}
			fmt.Fprintln(w)
		}
		nt, pt := sum(native), sum(proxy)
		without := pt - proxy[len(setProcs)-1]
		fmt.Fprintf(w, "  -P %d: native/proxy by CPU %.2f; with a proxy process costing nothing, at most %.2f of native\n",
			c.pipe, nt/pt, nt/without)
	}
}

// medianRow returns the per-column medians of rows; nil without rows.
func medianRow(rows [][]float64) []float64 {
	if len(rows) == 0 {
		return nil
	}
	out := make([]float64, len(rows[0]))
	for i := range out {
		col := make([]float64, len(rows))
		for j, r := range rows {
			col[j] = r[i]
		}
		out[i] = median(col)
	}
	return out
}

func sum(v []float64) float64 {
	t := 0.0
	for _, x := range v {
		t += x
	}
	return t
}
