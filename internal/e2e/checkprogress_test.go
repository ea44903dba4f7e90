package e2e

import (
	"fmt"
	"regexp"
	"testing"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// TestCheckProgressLines: `syncproxy check` with stderr not a terminal prints a
// plain progress line every --progress-interval: keys compared of the DBSIZE
// total, the rate and the time left.
func TestCheckProgressLines(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	const keys = 1500
	args := []interface{}{}
	for i := 0; i < keys; i++ {
		args = append(args, fmt.Sprintf("key:%d", i), i)
	}
	for _, s := range servers {
		s.Do(t, "MSET", args...)
	}
	code, stdout, stderr := runBinary(t, "check", "--master", servers[0].Addr, "--slaves", servers[1].Addr,
		"--rate", "1000", "--progress-interval", "200ms")
	if code != 0 {
		t.Fatalf("status %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	line := regexp.MustCompile(`(?m)^progress: slave-1 db0: (\d+)/1500 keys compared \((\d+)%\), (\d+) keys/s, ETA (\S+), 0 differing$`)
	got := line.FindAllStringSubmatch(stderr, -1)
	if len(got) < 3 {
		t.Fatalf("%d progress lines, want 3 or more:\n%s", len(got), stderr)
	}
	if got[0][1] == got[len(got)-1][1] {
		t.Errorf("progress did not move:\n%s", stderr)
	}
	if regexp.MustCompile(`\x1b|\r`).MatchString(stderr) {
		t.Errorf("terminal control characters off a terminal:\n%q", stderr)
	}
}
