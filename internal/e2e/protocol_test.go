package e2e

import (
	"strings"
	"testing"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// TestProtocolDifferential: inline commands, HELLO, error prefixes passed through
// (BUSYKEY, NOPROTO, WRONGTYPE), empty strings and CONFIG GET, byte for byte as
// Redis answers them.
func TestProtocolDifferential(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	ref, master := servers[0], servers[1]
	addr, _ := startProxy(t, master, servers[2])
	inline := "SET inl \"a b\"\r\nGET inl\r\nECHO 'x y'\r\nPING\r\nINCR n\r\n"
	got := map[string][]string{}
	for name, a := range map[string]string{"redis": ref.Addr, "proxy": addr} {
		c := redistest.DialRaw(t, a)
		c.WriteRaw([]byte(inline))
		for i := 0; i < 5; i++ {
			got[name] = append(got[name], string(c.Read()))
		}
		for _, cmd := range [][]string{
			{"HELLO", "4"}, {"HELLO", "x"},
			{"SET", "empty", ""}, {"GET", "empty"}, {"STRLEN", "empty"},
			{"SET", "bk", "v"}, {"DUMP", "bk"},
			{"CONFIG", "GET", "maxmemory"},
			{"CLIENT", "GETNAME"}, {"CLIENT", "SETNAME", "a b"}, {"CLIENT", "SETNAME", "me"}, {"CLIENT", "GETNAME"},
			{"SELECT", "16"}, {"SELECT", "x"},
			{"AUTH", "pw"},
			{"GET"}, {"NOSUCHCOMMAND", "a", "b"},
		} {
			got[name] = append(got[name], string(c.Do(cmd...)))
		}
		dump := got[name][len(got[name])-10]
		// RESTORE over an existing key: BUSYKEY.
		payload := dump[strings.Index(dump, "\r\n")+2 : len(dump)-2]
		got[name] = append(got[name], string(c.Do("RESTORE", "bk", "0", payload)))
		hello := string(c.Do("HELLO", "2"))
		if !strings.HasPrefix(hello, "*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n") {
			t.Errorf("%s: HELLO 2: %q", name, hello)
		}
	}
	// RESP3 is spoken (resp3_test.go compares it with Redis'): HELLO 3 switches.
	c := redistest.DialRaw(t, addr)
	if r := string(c.Do("HELLO", "3")); !strings.HasPrefix(r, "%7\r\n") || !strings.Contains(r, "$5\r\nproto\r\n:3\r\n") {
		t.Errorf("HELLO 3 through the proxy: %q", r)
	}
	for i := range got["redis"] {
		if got["redis"][i] != got["proxy"][i] {
			t.Errorf("step %d: redis %q, proxy %q", i, got["redis"][i], got["proxy"][i])
		}
	}
}
