package router_test

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/syncproxy/syncproxy/router"
)

var updateRoutes = flag.Bool("update-routes", false, "rewrite testdata/routes.golden")

// routeCases are argument lists whose routing depends on the arguments.
var routeCases = [][]string{
	{"set", "k", "v"}, {"set", "k", "v", "EX", "10"}, {"getex", "k"}, {"getex", "k", "PX", "5"},
	{"lpop", "k"}, {"lpop", "k", "2"}, {"rpop", "k", "2"},
	{"xread", "STREAMS", "s", "0"}, {"xread", "BLOCK", "0", "STREAMS", "s", "0"},
	{"xreadgroup", "GROUP", "g", "c", "STREAMS", "s", ">"},
	{"xreadgroup", "GROUP", "g", "c", "block", "10", "STREAMS", "s", ">"},
	{"client", "synctoken"}, {"script", "nosuch"}, {"acl", "nosuch"}, {"nosuch"},
	{"mset", "k", "v"}, {"mset", "k", "v", "k2"}, {"msetnx", "k", "v", "k2", "v2"},
}

// TestRoutes pins the route of every built-in command and subcommand, and of the
// commands routed by their arguments, against testdata/routes.golden: the class,
// the script mode and the null-array flag of each.
func TestRoutes(t *testing.T) {
	rt := router.New(router.BuiltinTable(), nil, nil)
	var lines []string
	show := func(args []string) {
		b := make([][]byte, len(args))
		for i, a := range args {
			b[i] = []byte(a)
		}
		r := rt.Route(b)
		lines = append(lines, fmt.Sprintf("%s: class=%d mode=%d nullarray=%v", strings.Join(args, " "), r.Class, r.Mode, r.NullArray))
	}
	t0 := rt.Table()
	for _, name := range t0.Names() {
		show([]string{name})
		ci := t0.Lookup([][]byte{[]byte(name)})
		var subs []string
		for s := range ci.Subcommands {
			subs = append(subs, s)
		}
		sort.Strings(subs)
		for _, s := range subs {
			show([]string{name, s})
		}
	}
	for _, c := range routeCases {
		show(c)
	}
	got := strings.Join(lines, "\n") + "\n"
	if *updateRoutes {
		if err := os.WriteFile("testdata/routes.golden", []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile("testdata/routes.golden")
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Errorf("route %q, want %q", gl[i], wl[i])
			}
		}
		if len(gl) != len(wl) {
			t.Errorf("%d routes, want %d", len(gl), len(wl))
		}
	}
}
