package router_test

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// writeCalls returns the write system calls this process made so far.
func writeCalls(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Skip("no /proc/self/io:", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Skip("no syscw in /proc/self/io")
	return 0
}

// TestNativeGroupOneWrite: a native group of 400 small SETs (about 40 KB of
// writes and effects) goes to the master in one write system call.
func TestNativeGroupOneWrite(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv.Addr, 5*time.Second, true)
	reqs := make([]*router.Request, 400)
	for i := range reqs {
		args := []string{"SET", fmt.Sprintf("key:%012d", i), "xyz"}
		reqs[i] = &router.Request{Kind: router.KindWrite, Raw: cmd(args...), Argc: len(args), Mode: replicate.ModeNative}
	}
	// One P: the writer runs only once every write is queued, so that they
	// make one group.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	before := writeCalls(t)
	do(b, reqs...)
	writes := writeCalls(t) - before
	runtime.GOMAXPROCS(2)
	for _, r := range reqs {
		if string(r.Reply) != "+OK\r\n" {
			t.Fatalf("reply %q", r.Reply)
		}
		if r.Seq != reqs[0].Seq {
			t.Skipf("the writes made more than one group (numbers %d and %d)", reqs[0].Seq, r.Seq)
		}
	}
	if writes != 1 {
		t.Errorf("a native group of %d writes took %d write system calls, want 1", len(reqs), writes)
	}
}
