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
