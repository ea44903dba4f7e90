package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// nodeScript exercises node-redis with its default options (RESP3 since v5's
// RESP3 support, the default in v6): strings, a hash as an object, a sorted set
// score as a number, a missing key as null, pub/sub, and HELLO's map.
const nodeScript = `
import { createClient } from 'redis';
const c = createClient({ url: process.argv[2] });
c.on('error', e => { console.error('client error', e.message); process.exit(1); });
await c.connect();
const out = [];
await c.set('k', 'v');
out.push('get=' + await c.get('k'));
out.push('nokey=' + await c.get('nokey'));
await c.hSet('h', { a: '1', b: '2' });
out.push('hgetall=' + JSON.stringify(await c.hGetAll('h')));
await c.zAdd('z', [{ score: 1.5, value: 'x' }]);
out.push('zscore=' + await c.zScore('z', 'x'));
const sub = c.duplicate();
await sub.connect();
const got = new Promise(r => sub.subscribe('ch', m => r(m)));
await new Promise(r => setTimeout(r, 100));
await c.publish('ch', 'hello');
out.push('message=' + await got);
const hello = await c.sendCommand(['HELLO']);
out.push('proto=' + hello.proto);
await sub.quit();
await c.quit();
console.log(out.join(' '));
`

// TestNodeRedisDefaults: node-redis (the npm "redis" package, v6) with default
// options works through the proxy. Skipped without node and npm, or when npm
// cannot install the package (no registry).
func TestNodeRedisDefaults(t *testing.T) {
	t.Parallel()
	out, master, slaves := runNodeScript(t, "redis@6", "check.mjs", nodeScript)
	want := `get=v nokey=null hgetall={"a":"1","b":"2"} zscore=1.5 message=hello proto=3`
	if got := strings.TrimSpace(string(out)); got != want {
		t.Fatalf("node-redis through the proxy:\n got %s\nwant %s", got, want)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// runNodeScript runs script (saved as name) with node, against a proxy in front
// of a master and two slaves it starts, in a directory of $TMPDIR where npm
// installed pkg once; it returns the script's output and the servers. It skips
// the test without node and npm, or when npm cannot install pkg (no registry).
func runNodeScript(t *testing.T, pkg, name, script string) (out []byte, master *redistest.Server, slaves []*redistest.Server) {
	t.Helper()
	node, err1 := exec.LookPath("node")
	npm, err2 := exec.LookPath("npm")
	if err1 != nil || err2 != nil {
		t.Skip("node or npm not installed")
	}
	dir := filepath.Join(os.TempDir(), "syncproxy-node-"+strings.NewReplacer("@", "", "/", "-").Replace(pkg))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "redis")); err != nil {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		install := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", pkg)
		install.Dir = dir
		if out, err := install.CombinedOutput(); err != nil {
			t.Skipf("npm install %s: %v\n%s", pkg, err, out)
		}
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	servers := redistest.StartN(t, 3)
	master, slaves = servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, path, "redis://"+addr)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node-redis (%s) through the proxy: %v\n%s", pkg, err, out)
	}
	return out, master, slaves
}
