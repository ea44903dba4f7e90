package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// The peers: other Redis proxies measured in the same run, when present. They are
// measurements to compare with, not dependencies: when one is missing its row of
// the table says "not found" and the bench runs without it.
const (
	sidePredixy = "predixy"   // predixy, 1 worker thread, reads from a slave of syncproxy
	sideTwem    = "twemproxy" // Debian's nutcracker, one pool with the master alone
	sideOther   = "proxy-bin" // -proxy-bin: another syncproxy binary, on the same master and slaves
)

// defaultPredixy is where the peer binary lives, relative to the module root.
const defaultPredixy = "../shared/bin/predixy"

// peer is a proxy measured beside syncproxy.
type peer struct {
	side    string
	label   string // its row in the table
	bin     string // "" when not found
	missing string // why it is not measured ("not found: PATH")
	addr    string
	proc    *proc
}

// findPeers resolves the peers' binaries: -predixy (relative paths from the
// module root, and for a git worktree also from the main working tree's root)
// and -twemproxy (looked up in PATH).
func (b *bench) findPeers(root string) {
	pred := &peer{side: sidePredixy, label: "predixy (C++, 1 thread)"}
	paths := []string{b.opt.predixy}
	if !filepath.IsAbs(b.opt.predixy) {
		paths = []string{filepath.Join(root, b.opt.predixy)}
		if main := mainWorktree(root); main != "" && main != root {
			paths = append(paths, filepath.Join(main, b.opt.predixy))
		}
	}
	for _, path := range paths {
		if st, err := os.Stat(path); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			pred.bin = path
			break
		}
	}
	if pred.bin == "" {
		pred.missing = "not found: " + strings.Join(paths, ", ")
	}
	twem := &peer{side: sideTwem, label: "twemproxy (nutcracker)"}
	if bin, err := exec.LookPath(b.opt.twemproxy); err == nil {
		twem.bin = bin
	} else {
		twem.missing = "not found: " + b.opt.twemproxy + " (apt-get install nutcracker)"
	}
	b.peers = []*peer{pred, twem}
}

// addOtherProxy adds the -proxy-bin syncproxy to the peers, when given.
func (b *bench) addOtherProxy() error {
	if b.opt.otherProxy == "" {
		return nil
	}
	bin, err := filepath.Abs(b.opt.otherProxy)
	if err != nil {
		return err
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("-proxy-bin %s: not an executable file", bin)
	}
	b.peers = append(b.peers, &peer{side: sideOther, label: "syncproxy (" + b.opt.otherProxy + ")", bin: bin})
	return nil
}

// startPeers starts every peer found: predixy in front of master (writes) and
// the first slave (reads), twemproxy in front of master, the -proxy-bin
// syncproxy in front of master and slaves.
func (b *bench) startPeers(ctx context.Context, master string, slaves []string) error {
	slave := slaves[0]
	for _, p := range b.peers {
		if p.bin == "" {
			fmt.Fprintf(b.log, "bench: %s %s; its row says so\n", p.side, p.missing)
			continue
		}
		var err error
		switch p.side {
		case sideOther:
			p.addr, err = b.startProxyBin(ctx, "syncproxy-other", p.bin, master, slaves)
			p.proc = b.lastProc("syncproxy-other")
			if err == nil {
				fmt.Fprintf(b.log, "bench: %s %s on %s\n", p.side, p.bin, p.addr)
			}
		case sidePredixy:
			err = b.startPeer(ctx, p, func(port, _ int, dir string) []string {
				conf := filepath.Join(dir, "predixy.conf")
				return []string{conf, predixyConf(port, master, slave, filepath.Join(dir, "predixy.log"))}
			})
		case sideTwem:
			err = b.startPeer(ctx, p, func(port, stats int, dir string) []string {
				conf := filepath.Join(dir, "nutcracker.yml")
				return []string{conf, twemConf(port, master), "-c", conf, "-s", strconv.Itoa(stats), "-a", "127.0.0.1",
					"-o", filepath.Join(dir, "nutcracker.log"), "-p", filepath.Join(dir, "nutcracker.pid")}
			})
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// startPeer starts p on a free port and waits until it answers PING. setup gets
// the port, a second free port (twemproxy's stats) and p's directory, and
// returns the config file's path, its text, then the arguments (none: the
// config file alone).
func (b *bench) startPeer(ctx context.Context, p *peer, setup func(port, stats int, dir string) []string) error {
	dir := filepath.Join(b.tmp, p.side)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		port, err1 := freePort()
		stats, err2 := freePort()
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		s := setup(port, stats, dir)
		if err := os.WriteFile(s[0], []byte(s[1]), 0o644); err != nil {
			return err
		}
		args := s[2:]
		if len(args) == 0 {
			args = []string{s[0]}
		}
		logPath := filepath.Join(dir, "stdout-"+strconv.Itoa(attempt)+".log")
		pr, err := b.start(p.side, logPath, p.bin, args...)
		if err != nil {
			return err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		err = poll(ctx, readyTimeout, 10*time.Millisecond, func() (bool, error) {
			if pr.exited() {
				return false, errors.New(p.side + " exited")
			}
			pong, err := redis.String(doOnce(addr, "PING"))
			return err == nil && pong == "PONG", nil
		})
		if err == nil {
			p.addr, p.proc = addr, pr
			fmt.Fprintf(b.log, "bench: %s %s on %s\n", p.side, p.bin, addr)
			return nil
		}
		pr.stop()
		if attempt < startAttempts && ctx.Err() == nil {
			continue // most likely a port taken meanwhile
		}
		return fmt.Errorf("%s did not answer PING: %w\n%s", p.side, err, lastLines(readFile(logPath), 10))
	}
}

// predixyConf is predixy's config (shared/bin/README.md): one worker thread, the
// master for writes, the slave for reads.
func predixyConf(port int, master, slave, logPath string) string {
	return fmt.Sprintf(`Bind 127.0.0.1:%d
WorkerThreads 1
Log %s
StandaloneServerPool {
    RefreshMethod fixed
    Group g1 {
        + %s
        + %s
    }
    MasterReadPriority 0
    StaticSlaveReadPriority 50
}
`, port, logPath, master, slave)
}

// twemConf is nutcracker's config: one pool with the master alone.
func twemConf(port int, master string) string {
	return fmt.Sprintf(`bench:
  listen: 127.0.0.1:%d
  hash: fnv1a_64
  distribution: ketama
  redis: true
  auto_eject_hosts: false
  servers:
   - %s:1
`, port, master)
}

// peer returns the peer measured on side, nil when side is not a peer's.
func (b *bench) peer(side string) *peer {
	for _, p := range b.peers {
		if p.side == side {
			return p
		}
	}
	return nil
}

// mainWorktree returns the root of the main working tree of the git repository
// holding dir ("" when there is none): a linked worktree shares its .git.
func mainWorktree(dir string) string {
	out, err := exec.Command("git", "-C", dir, "rev-parse", "--path-format=absolute", "--git-common-dir").Output()
	common := strings.TrimSpace(string(out))
	if err != nil || filepath.Base(common) != ".git" {
		return ""
	}
	return filepath.Dir(common)
}
