package replicate

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestResyncProgressLog: the copy counts keys and logs its progress at most
// every resyncLogEvery.
func TestResyncProgressLog(t *testing.T) {
	var buf bytes.Buffer
	a := &Applier{log: zerolog.New(&buf)}
	a.progress.begin(1000)
	a.progress.add(a, 200)
	if buf.Len() != 0 {
		t.Fatalf("logged before resyncLogEvery: %s", buf.String())
	}
	a.progress.lastLog = time.Now().Add(-resyncLogEvery)
	a.progress.started = time.Now().Add(-2 * time.Second)
	a.progress.add(a, 300)
	a.progress.add(a, 100)
	out := buf.String()
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, `"keys_copied":500,"keys_total":1000,"keys_per_second":2`) ||
		!strings.Contains(out, `"message":"full resync copying"`) {
		t.Errorf("progress log: %s", out)
	}
	if copied, total := a.ResyncProgress(); copied != 600 || total != 1000 {
		t.Errorf("ResyncProgress() = %d, %d; want 600, 1000", copied, total)
	}
}
