package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/replicate/check"
)

func TestFormatProgress(t *testing.T) {
	p := check.Progress{Phase: check.PhaseCompare, Slaves: []string{"slave-1", "slave-2"}, DB: 3,
		Done: 2500, Total: 10000, Differing: 2, Elapsed: 5 * time.Second}
	want := "slave-1,slave-2 db3 [#######.......................] 2500/10000 keys compared (25%), 500 keys/s, ETA 15s, 2 differing"
	if got := formatProgress(p, true); got != want {
		t.Errorf("bar:\n got %q\nwant %q", got, want)
	}
	want = "progress: slave-1,slave-2 db3: 2500/10000 keys compared (25%), 500 keys/s, ETA 15s, 2 differing"
	if got := formatProgress(p, false); got != want {
		t.Errorf("plain:\n got %q\nwant %q", got, want)
	}
	p = check.Progress{Phase: check.PhaseExtra, Slaves: []string{"slave-1"}, Total: 0}
	if got := formatProgress(p, false); !strings.Contains(got, "0/0 slave keys looked up on the master (100%), 0 keys/s, ETA -") {
		t.Errorf("empty DB: %q", got)
	}
}

// TestStatusLine: on a terminal the bar is redrawn in place and cleared before
// a diff; off a terminal, plain lines at most every interval; quiet: nothing.
func TestStatusLine(t *testing.T) {
	p := check.Progress{Phase: check.PhaseCompare, Slaves: []string{"slave-1"}, Done: 1, Total: 2, Elapsed: time.Second}
	var out, errOut bytes.Buffer
	tty := &statusLine{out: &out, err: &errOut, tty: true}
	tty.progress(p)
	tty.println("slave-1 db0 \"k\" missing")
	if got := errOut.String(); !strings.HasPrefix(got, "\r\x1b[Kslave-1 db0 [###############") || !strings.HasSuffix(got, "\r\x1b[K") {
		t.Errorf("terminal: %q", got)
	}
	errOut.Reset()
	plain := &statusLine{out: &out, err: &errOut, every: time.Hour, last: time.Now()}
	plain.progress(p)
	if errOut.Len() != 0 {
		t.Errorf("a plain line before the interval: %q", errOut.String())
	}
	plain.last = time.Now().Add(-2 * time.Hour)
	plain.progress(p)
	plain.progress(p)
	if got := errOut.String(); strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, "progress: slave-1 db0: 1/2") {
		t.Errorf("plain: %q", got)
	}
	errOut.Reset()
	quiet := &statusLine{out: &out, err: &errOut, quiet: true}
	quiet.progress(p)
	if errOut.Len() != 0 {
		t.Errorf("quiet: %q", errOut.String())
	}
}
