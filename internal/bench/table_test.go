package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tableBench is a bench with figures for two rounds: predixy measured, twemproxy not found.
func tableBench(t *testing.T) (*bench, []*cell, *bytes.Buffer) {
	t.Helper()
	var out bytes.Buffer
	b := &bench{opt: options{rounds: 2, pipelines: []int{1, 16}, repl: true}, out: &out}
	b.peers = []*peer{
		{side: sidePredixy, label: "predixy (C++, 1 thread)", addr: "127.0.0.1:1"},
		{side: sideTwem, label: "twemproxy (nutcracker)", missing: "not found: nutcracker"},
	}
	get1 := &cell{test: "get", pipe: 1, rps: map[string][]float64{
		sideDirect: {100, 200}, sideProxy: {90, 100}, sidePredixy: {80, 190}, // ratios 0.9/0.5 -> 0.70; 0.8/0.95 -> 0.875
	}, cpu: map[string][]float64{sideProxy: {10, 12}, sidePredixy: {10, 10}}}
	get16 := &cell{test: "get", pipe: 16, rps: map[string][]float64{
		sideDirect: {1000, 1000}, sideProxy: {700, 700}, sidePredixy: {800, 800},
	}, cpu: map[string][]float64{sideProxy: {2, 2}, sidePredixy: {2, 2}}}
	set1 := &cell{test: "set", pipe: 1, rps: map[string][]float64{
		sideDirect: {100, 100}, sideProxy: {40, 40}, sidePredixy: {90, 90}, sideNative: {80, 80},
	}, cpu: map[string][]float64{sideProxy: {30, 30}, sidePredixy: {12, 12}},
		lag: lagStats{ms: []int64{1, 2, 3, 20}}}
	set16 := &cell{test: "set", pipe: 16, rps: map[string][]float64{
		sideDirect: {1000, 1000}, sideProxy: {400, 400}, sidePredixy: {900, 900}, sideNative: {500, 500},
	}, cpu: map[string][]float64{sideProxy: {5, 5}, sidePredixy: {2, 2}},
		lag: lagStats{ms: []int64{1, 1, 2, 2}}}
	return b, []*cell{set1, set16, get1, get16}, &out
}

func TestReportTable(t *testing.T) {
	b, cells, out := tableBench(t)
	b.reportTable(cells)
	want := []string{
		"| system | GET P1 | GET P16 | SET P1 | SET P16 | CPU us/GET P1 | CPU us/GET P16 | CPU us/SET P1 | CPU us/SET P16 |",
		"| syncproxy | 0.70 | 0.70 | 0.40 (0.50 of native repl.) | 0.40 (0.80 of native repl.) | 11.0 | 2.0 | 30.0 | 5.0 |",
		"| predixy (C++, 1 thread) | 0.88 | 0.80 | 0.90 | 0.90 | 10.0 | 2.0 | 12.0 | 2.0 |",
		"| twemproxy (nutcracker) | not found: nutcracker | | | | | | | |",
		"| master + 2 native replicas |  |  | 0.80 | 0.50 |  |  |  |  |",
	}
	for _, line := range want {
		if !strings.Contains(out.String(), line+"\n") {
			t.Errorf("table lacks line\n%s\ngot:\n%s", line, out)
		}
	}
}

func TestReportTargets(t *testing.T) {
	b, cells, out := tableBench(t)
	b.reportTargets(cells)
	want := map[string]string{
		"GET -P 1 >= 0.85 of direct":                         "0.70 BELOW",
		"GET -P 1 >= predixy's ratio (0.88)":                 "0.70 BELOW",
		"CPU us/GET -P 1 <= 1.3 x predixy's (10.0)":          "11.0 (1.10 x) PASS",
		"GET -P 16 >= 0.60 of direct":                        "0.70 PASS",
		"CPU us/GET -P 16 <= 1.3 x predixy's (2.0)":          "2.0 (1.00 x) PASS",
		"SET -P 1, 2 slaves, >= 0.80 of native replication":  "0.50 BELOW",
		"replication lag p99 < 10 ms, SET -P 1":              "p50 2 ms, p99 20 ms BELOW",
		"SET -P 16, 2 slaves, >= 0.60 of native replication": "0.80 PASS",
		"replication lag p99 < 10 ms, SET -P 16":             "p50 1 ms, p99 2 ms PASS",
	}
	got := map[string]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		if len(line) > 55 && strings.HasPrefix(line, "  ") {
			got[strings.TrimSpace(line[:55])] = strings.Join(strings.Fields(line[55:]), " ")
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("target %q: got %q, want %q\n%s", k, got[k], v, out)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d targets, want %d:\n%s", len(got), len(want), out)
	}
}

// TestReportTargetsWithoutPredixy: the targets that compare with predixy say it was not measured.
func TestReportTargetsWithoutPredixy(t *testing.T) {
	b, cells, out := tableBench(t)
	b.peers[0] = &peer{side: sidePredixy, label: "predixy (C++, 1 thread)", missing: "not found: x"}
	b.reportTargets(cells)
	for _, s := range []string{"GET -P 1 >= predixy's ratio", "CPU us/GET -P 1 <= 1.3 x predixy's"} {
		if !strings.Contains(out.String(), s+strings.Repeat(" ", 52-len(s)+1)+"predixy") {
			t.Errorf("no %q ... predixy not measured line:\n%s", s, out)
		}
	}
}

func TestFindPeers(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "predixy")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	b := &bench{opt: options{predixy: "predixy", twemproxy: "no-such-nutcracker-binary"}}
	b.findPeers(dir)
	if p := b.peer(sidePredixy); p.bin != bin || p.missing != "" {
		t.Errorf("predixy relative to the root: got bin %q missing %q", p.bin, p.missing)
	}
	if p := b.peer(sideTwem); p.bin != "" || !strings.HasPrefix(p.missing, "not found: no-such-nutcracker-binary") {
		t.Errorf("twemproxy: got bin %q missing %q", p.bin, p.missing)
	}
	b.opt.predixy = filepath.Join(dir, "absent")
	b.findPeers(dir)
	if p := b.peer(sidePredixy); p.bin != "" || p.missing != "not found: "+b.opt.predixy {
		t.Errorf("absent predixy: got bin %q missing %q", p.bin, p.missing)
	}
}

// TestReportSetCPU: the breakdown's medians, totals, and the ratio a proxy
// process costing nothing would leave (native's total over the rest).
func TestReportSetCPU(t *testing.T) {
	b, cells, out := tableBench(t)
	cells[0].procs = map[string][][]float64{
		// redis-benchmark, master, slave 1, slave 2, syncproxy
		sideNative: {{20, 15, 3, 3, 0}, {22, 15, 3, 3, 0}, {18, 15, 3, 3, 0}}, // medians 20, 15, 3, 3: 41
		sideProxy:  {{25, 12, 4, 4, 30}, {25, 12, 4, 4, 40}},                  // 25, 12, 4, 4, 35: 80; 45 without
	}
	b.reportSetCPU(cells)
	want := []string{
		"SET       1 native             20.00           15.00            3.00            3.00               -    41.00",
		"SET       1 proxy              25.00           12.00            4.00            4.00           35.00    80.00          45.00",
		"-P 1: native/proxy by CPU 0.51; with a proxy process costing nothing, at most 0.91 of native",
	}
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			t.Errorf("missing %q in:\n%s", w, out.String())
		}
	}
	if strings.Contains(out.String(), "SET      16") {
		t.Errorf("a cell without figures has rows:\n%s", out.String())
	}
}

// TestRunRequests: a run at -P N sends N times -n, so that runs at every depth
// last about as long; the near cache run keeps -n.
func TestRunRequests(t *testing.T) {
	b := &bench{opt: options{requests: 70000}}
	if got := b.runRequests(1); got != 70000 {
		t.Errorf("-P 1: %d", got)
	}
	if got := b.runRequests(16); got != 1120000 {
		t.Errorf("-P 16: %d", got)
	}
	b.opt.nearCache = true
	if got := b.runRequests(16); got != 70000 {
		t.Errorf("near cache run at -P 16: %d", got)
	}
}
