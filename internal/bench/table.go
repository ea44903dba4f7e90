package main

import (
	"fmt"
	"math"
	"strings"
)

// Issue 15's targets.
var (
	getTargets = map[int]float64{1: 0.85, 16: 0.6} // GET through syncproxy / direct
	setTargets = map[int]float64{1: 0.8, 16: 0.6}  // SET through syncproxy with 2 slaves / master with 2 native replicas
)

const (
	getVsPredixyPipe = 1   // the depth at which GET through syncproxy must reach predixy's ratio
	cpuVsPredixy     = 1.3 // syncproxy's CPU per GET at most this times predixy's
	lagP99Target     = 10  // replication lag p99 bound, in milliseconds
)

// tableTests are the tests of the table, in its order.
var tableTests = []string{"get", "set"}

// baseCell returns the base cell of test at depth pipe, nil when not measured.
func baseCell(cells []*cell, test string, pipe int) *cell {
	for _, c := range cells {
		if c.kind == kindBase && c.test == test && c.pipe == pipe {
			return c
		}
	}
	return nil
}

// ratio is the median over the rounds of num/den measured in the same round;
// NaN when either side was not measured.
func ratio(num, den []float64) float64 {
	var r []float64
	for i := range min(len(num), len(den)) {
		r = append(r, num[i]/den[i])
	}
	return median(r)
}

// tableColumn is one column of the table.
type tableColumn struct {
	name string
	test string
	pipe int
	cpu  bool
}

func (b *bench) tableColumns(cells []*cell) []tableColumn {
	var cols []tableColumn
	for _, cpu := range []bool{false, true} {
		for _, t := range tableTests {
			for _, p := range b.opt.pipelines {
				if baseCell(cells, t, p) == nil || baseCell(cells, t, p).rps[sideDirect] == nil {
					continue
				}
				name := fmt.Sprintf("%s P%d", strings.ToUpper(t), p)
				if cpu {
					name = "CPU us/" + name
				}
				cols = append(cols, tableColumn{name: name, test: t, pipe: p, cpu: cpu})
			}
		}
	}
	return cols
}

// reportTable prints the table: per system, the ratios to direct Redis
// and the proxy's CPU per request.
func (b *bench) reportTable(cells []*cell) {
	w := b.out
	cols := b.tableColumns(cells)
	if len(cols) == 0 {
		return
	}
	fmt.Fprintf(w, "\nRequests/s as a ratio to direct Redis (the master, measured in the same round), medians over %d round(s);\n"+
		"CPU us = the proxy process's user+system time per request, in microseconds (median)\n\n", b.opt.rounds)
	names := []string{"system"}
	for _, c := range cols {
		names = append(names, c.name)
	}
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(names, " | "), strings.Repeat("---|", len(names)))
	label := "syncproxy"
	if b.opt.threads > 0 {
		label = fmt.Sprintf("syncproxy (--threads %d)", b.opt.threads)
	}
	b.tableRow(cells, cols, label, sideProxy)
	for _, p := range b.peers {
		if p.addr == "" {
			fmt.Fprintf(w, "| %s | %s |%s\n", p.label, p.missing, strings.Repeat(" |", len(cols)-1))
			continue
		}
		b.tableRow(cells, cols, p.label, p.side)
	}
	if b.opt.repl {
		b.tableRow(cells, cols, "master + 2 native replicas", sideNative)
	}
	fmt.Fprintf(w, "\nsyncproxy's SET keeps its 2 slaves exact (in brackets: its ratio to the master with 2 native\n"+
		"replicas); predixy (reading from a slave) and twemproxy (the master alone) keep no slaves on their SET rows.\n")
}

// tableRow prints the row of side.
func (b *bench) tableRow(cells []*cell, cols []tableColumn, label, side string) {
	out := []string{label}
	for _, col := range cols {
		c := baseCell(cells, col.test, col.pipe)
		v := ""
		switch {
		case col.cpu && c.cpu[side] != nil:
			v = fmt.Sprintf("%.1f", median(c.cpu[side]))
		case !col.cpu && c.rps[side] != nil:
			v = fmtRatio(ratio(c.rps[side], c.rps[sideDirect]))
			if side == sideProxy && c.rps[sideNative] != nil {
				v += fmt.Sprintf(" (%.2f of native repl.)", ratio(c.rps[sideProxy], c.rps[sideNative]))
			}
		}
		out = append(out, v)
	}
	fmt.Fprintf(b.out, "| %s |\n", strings.Join(out, " | "))
}

// reportTargets marks issue 15's targets PASS or BELOW.
func (b *bench) reportTargets(cells []*cell) {
	w := b.out
	fmt.Fprintf(w, "\nIssue 15 targets (syncproxy):\n")
	line := func(what, value, v string) { fmt.Fprintf(w, "  %-52s %-22s %s\n", what, value, v) }
	pred := b.peer(sidePredixy)
	predixyOK := pred != nil && pred.addr != ""
	for _, p := range b.opt.pipelines {
		c := baseCell(cells, "get", p)
		if c == nil || c.rps[sideDirect] == nil {
			continue
		}
		r := ratio(c.rps[sideProxy], c.rps[sideDirect])
		if t, ok := getTargets[p]; ok {
			line(fmt.Sprintf("GET -P %d >= %.2f of direct", p, t), fmt.Sprintf("%.2f", r), mark(r >= t))
		}
		if p == getVsPredixyPipe {
			if predixyOK {
				pr := ratio(c.rps[sidePredixy], c.rps[sideDirect])
				line(fmt.Sprintf("GET -P %d >= predixy's ratio (%.2f)", p, pr), fmt.Sprintf("%.2f", r), mark(r >= pr))
			} else {
				line(fmt.Sprintf("GET -P %d >= predixy's ratio", p), "predixy not measured", "")
			}
		}
		if _, ok := getTargets[p]; !ok {
			continue
		}
		if predixyOK && c.cpu[sideProxy] != nil && c.cpu[sidePredixy] != nil {
			mine, theirs := median(c.cpu[sideProxy]), median(c.cpu[sidePredixy])
			line(fmt.Sprintf("CPU us/GET -P %d <= %.1f x predixy's (%.1f)", p, cpuVsPredixy, theirs),
				fmt.Sprintf("%.1f (%.2f x)", mine, mine/theirs), mark(mine <= cpuVsPredixy*theirs))
		} else {
			line(fmt.Sprintf("CPU us/GET -P %d <= %.1f x predixy's", p, cpuVsPredixy), "predixy or CPU not measured", "")
		}
	}
	for _, p := range b.opt.pipelines {
		c := baseCell(cells, "set", p)
		if c == nil || c.rps[sideNative] == nil {
			continue
		}
		if t, ok := setTargets[p]; ok {
			r := ratio(c.rps[sideProxy], c.rps[sideNative])
			line(fmt.Sprintf("SET -P %d, 2 slaves, >= %.2f of native replication", p, t), fmt.Sprintf("%.2f", r), mark(r >= t))
		}
		if len(c.lag.ms) == 0 {
			line(fmt.Sprintf("replication lag p99 < %d ms, SET -P %d", lagP99Target, p), "no samples", "")
			continue
		}
		p50, p99 := percentile(c.lag.ms, 0.50), percentile(c.lag.ms, 0.99)
		line(fmt.Sprintf("replication lag p99 < %d ms, SET -P %d", lagP99Target, p),
			fmt.Sprintf("p50 %d ms, p99 %d ms", p50, p99), mark(p99 < lagP99Target))
	}
}

// mark is a target's verdict.
func mark(ok bool) string {
	if ok {
		return "PASS"
	}
	return "BELOW"
}

// fmtRatio formats a ratio, "-" when not measured.
func fmtRatio(r float64) string {
	if math.IsNaN(r) {
		return "-"
	}
	return fmt.Sprintf("%.2f", r)
}
