package proxy

import (
	"testing"

	"github.com/syncproxy/syncproxy/router"
)

// TestHandlersComplete checks the command table against the session's handlers:
// every handler a Policy row names exists, and every command the proxy answers
// itself has one (else it would be refused as not supported).
func TestHandlersComplete(t *testing.T) {
	for h := router.HandlerNone + 1; int(h) < router.NumHandlers; h++ {
		if handlers[h] == nil {
			t.Errorf("handler %d has no function", h)
		}
	}
	table := router.BuiltinTable()
	check := func(ci *router.CommandInfo) {
		if ci.Policy.Class == router.ClassLocal && ci.Policy.Handler == router.HandlerNone {
			t.Errorf("%s is answered locally but has no handler", ci.Name)
		}
	}
	for _, name := range table.Names() {
		ci := table.Lookup([][]byte{[]byte(name)})
		check(ci)
		for _, sub := range ci.Subcommands {
			check(sub)
		}
	}
}

// TestRouteOfAsRoute: the remembered route of a run of one command is the
// router's, whatever the commands before, their spelling and arguments.
func TestRouteOfAsRoute(t *testing.T) {
	rt := router.New(router.BuiltinTable(), nil, nil)
	sess := &Session{s: &Server{router: rt}}
	cmds := [][]string{
		{"GET", "k"}, {"GET", "k"}, {"get", "k"}, {"GET"}, {"SET", "k", "v"}, {"GET", "k"},
		{"XREAD", "STREAMS", "s", "0"}, {"XREAD", "BLOCK", "0", "STREAMS", "s", "0"},
		{"XREAD", "STREAMS", "s", "0"}, {"CLIENT", "ID"}, {"CLIENT", "GETNAME"}, {"NOSUCH"}, {"GETT"},
		{"GE"}, {"MGET", "a", "b"}, {"GET", "k"}, {""}, {"GETRANGEGETRANGEGETRANGE", "k"}, {"GET", "k"},
		{"XINFO", "GROUPS", "s"}, {"XINFO", "STREAM", "s"}, {"XINFO", "HELP"}, {"XINFO"}, {"OBJECT", "ENCODING", "k"},
		{"OBJECT", "FREQ", "k"},
	}
	for _, c := range cmds {
		args := make([][]byte, len(c))
		for i, a := range c {
			args[i] = []byte(a)
		}
		if got, want := sess.routeOf(args), rt.Route(args); got != want {
			t.Errorf("%q: routeOf %+v, Route %+v", c, got, want)
		}
	}
}
