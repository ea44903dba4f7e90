package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/replicate/check"
)

// checkOptions are the settings of `syncproxy check`.
type checkOptions struct {
	cfg           check.Config
	quiet         bool
	progressEvery time.Duration // between plain progress lines, off a terminal
}

// parseCheckFlags parses the arguments of `syncproxy check`.
func parseCheckFlags(args []string, stdout io.Writer) (opts checkOptions, help bool, err error) {
	fs := flag.NewFlagSet("syncproxy check", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		master     = fs.String("master", "", "master Redis HOST:PORT (required)")
		slaves     = fs.String("slaves", "", "comma-separated slave Redis HOST:PORT list (required)")
		repair     = fs.Bool("repair", false, "copy each differing key from the master to the slave again, then verify it")
		rate       = fs.Int("rate", check.DefaultRate, "keys compared per second at most (0: no bound)")
		dbs        = fs.String("dbs", "", "databases to compare, e.g. 0-15 or 0,3,5-7 (default: every database holding keys)")
		masterPass = fs.String("master-password", "", "password of the master (default: $SYNCPROXY_MASTER_PASSWORD)")
		slavePass  = fs.String("slave-password", "", "password of the slaves (default: $SYNCPROXY_SLAVE_PASSWORD)")
		masterUser = fs.String("master-user", "", "ACL user of the master (with a password)")
		slaveUser  = fs.String("slave-user", "", "ACL user of the slaves (with a password)")
		timeout    = fs.Duration("timeout", check.DefaultTimeout, "timeout of connections and of each round trip")
		byContent  = fs.Bool("by-content", false, "compare values by content even where DEBUG DIGEST-VALUE is available")
		quiet      = fs.Bool("quiet", false, "print only the differing keys: no progress, no summary")
		every      = fs.Duration("progress-interval", 5*time.Second, "time between progress lines on stderr when it is not a terminal (on a terminal: a progress bar)")
	)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage: syncproxy check --master HOST:PORT --slaves H:P,H:P [flags]\n\n"+
				"Compares every slave with the master key by key (existence, type, value,\n"+
				"absolute expiry) with SCAN, at a bounded rate, and lists the differing keys.\n"+
				"Exit status: 0 when the slaves match the master (after --repair, if given),\n"+
				"1 when keys differ, 2 on bad usage, a connection error or an interrupt.\n\nFlags:\n")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return opts, true, nil
		}
		return opts, false, err
	}
	if fs.NArg() > 0 {
		return opts, false, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *master == "" || *slaves == "" {
		return opts, false, errors.New("--master and --slaves are required")
	}
	if *rate < 0 {
		return opts, false, errors.New("--rate must not be negative")
	}
	if *timeout <= 0 {
		return opts, false, errors.New("--timeout must be positive")
	}
	if *every <= 0 {
		return opts, false, errors.New("--progress-interval must be positive")
	}
	if *masterPass == "" {
		*masterPass = os.Getenv("SYNCPROXY_MASTER_PASSWORD")
	}
	if *slavePass == "" {
		*slavePass = os.Getenv("SYNCPROXY_SLAVE_PASSWORD")
	}
	if err := checkAddr("--master", *master); err != nil {
		return opts, false, err
	}
	cfg := &opts.cfg
	cfg.Master = replicate.Endpoint{Name: "master", Addr: *master, Username: *masterUser, Password: *masterPass}
	if cfg.Slaves, err = checkSlaves(*slaves, *master, *slaveUser, *slavePass); err != nil {
		return opts, false, err
	}
	if len(cfg.Slaves) == 0 {
		return opts, false, errors.New("--slaves: no slave given")
	}
	if *dbs != "" {
		if cfg.DBs, err = parseDBs(*dbs); err != nil {
			return opts, false, err
		}
	}
	cfg.Rate, cfg.Repair, cfg.Timeout, cfg.ByContent = *rate, *repair, *timeout, *byContent
	opts.quiet, opts.progressEvery = *quiet, *every
	return opts, false, nil
}

func checkAddr(name, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("%s: %q is not HOST:PORT", name, addr)
	}
	return nil
}

// maxCheckDB bounds the DB numbers --dbs takes (Redis' "databases" is 16 by default).
const maxCheckDB = 1 << 16

// checkSlaves returns the slaves of the comma-separated list, each with the
// credentials; none may be listed twice or be the master.
func checkSlaves(list, master, user, password string) ([]replicate.Endpoint, error) {
	var eps []replicate.Endpoint
	seen := map[string]bool{master: true}
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if err := checkAddr("--slaves", s); err != nil {
			return nil, err
		}
		if seen[s] {
			return nil, fmt.Errorf("--slaves: %s is listed twice, or is the master", s)
		}
		seen[s] = true
		eps = append(eps, replicate.Endpoint{
			Name: "slave-" + strconv.Itoa(len(eps)+1), Addr: s, Username: user, Password: password})
	}
	return eps, nil
}

// parseDBs parses a list of DB numbers and ranges: "0-15", "0,3,5-7".
func parseDBs(s string) ([]int, error) {
	set := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err1 := strconv.Atoi(lo)
		b, err2 := a, error(nil)
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 0 || b < a || b > maxCheckDB {
			return nil, fmt.Errorf("--dbs: bad database or range %q", part)
		}
		for db := a; db <= b; db++ {
			set[db] = true
		}
	}
	dbs := make([]int, 0, len(set))
	for db := range set {
		dbs = append(dbs, db)
	}
	sort.Ints(dbs)
	return dbs, nil
}

// runCheck is `syncproxy check`.
func runCheck(args []string, stdout, stderr io.Writer) int {
	opts, help, err := parseCheckFlags(args, stdout)
	if help {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "syncproxy check: %v (see syncproxy check --help)\n", err)
		return 2
	}
	tty := false
	if f, ok := stderr.(*os.File); ok && !opts.quiet {
		tty = isatty.IsTerminal(f.Fd())
	}
	st := &statusLine{out: stdout, err: stderr, tty: tty, quiet: opts.quiet, every: opts.progressEvery, last: time.Now()}
	cfg := opts.cfg
	cfg.Log = zerolog.New(zerolog.ConsoleWriter{Out: st, NoColor: !tty, TimeFormat: time.TimeOnly}).
		Level(zerolog.WarnLevel).With().Timestamp().Logger()
	cfg.OnDiff = func(d check.Diff) { st.println(formatDiff(d, cfg.Repair)) }
	cfg.OnProgress = st.progress

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := check.Run(ctx, cfg)
	st.clear()
	if err != nil {
		if ctx.Err() != nil {
			err = errors.New("interrupted")
		}
		fmt.Fprintf(stderr, "syncproxy check: %v\n", err)
		return 2
	}
	if !opts.quiet {
		for i := range rep.Slaves {
			fmt.Fprintln(stdout, formatSummary(&rep.Slaves[i], cfg.Repair))
		}
	}
	if rep.Clean() {
		return 0
	}
	return 1
}

// formatDiff renders a difference on one line; the key is quoted as a Go string.
func formatDiff(d check.Diff, repair bool) string {
	line := fmt.Sprintf("%s db%d %s %s: %s", d.Slave, d.DB, strconv.Quote(d.Key), d.Kind, d.Detail)
	switch {
	case d.Repaired:
		line += " (repaired)"
	case repair && d.Kind != check.DiffUnsettled:
		line += " (not repaired: " + d.RepairErr + ")"
	}
	return line
}

// formatSummary renders a slave's outcome on one line.
func formatSummary(s *check.SlaveReport, repair bool) string {
	line := fmt.Sprintf("%s %s: %d keys compared, %d looked up on the master: ", s.Name, s.Addr, s.Compared, s.Scanned)
	if s.Differing() == 0 {
		return line + "no differences"
	}
	var kinds []string
	for _, k := range check.DiffKinds() {
		if n := s.Kinds[k]; n > 0 {
			kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
		}
	}
	line += fmt.Sprintf("%d differing (%s)", s.Differing(), strings.Join(kinds, ", "))
	if repair {
		line += fmt.Sprintf(", %d repaired", s.Repaired)
	}
	return line
}

// statusLine shows the progress on stderr. On a terminal it keeps a progress
// bar on the bottom line: what is written to stdout, or logged to stderr, clears
// it first. Off a terminal (a log file, a pipe) it prints a plain line every
// `every`. It decides on stderr, where it writes: `check > diffs.txt` on a
// terminal still shows the bar, and the diffs file holds only the diffs.
type statusLine struct {
	out, err io.Writer
	tty      bool
	quiet    bool          // no progress at all
	every    time.Duration // between plain lines
	shown    bool
	last     time.Time
}

// statusEvery bounds how often the progress bar is redrawn.
const statusEvery = 100 * time.Millisecond

// barWidth is the width of the progress bar, in characters.
const barWidth = 30

func (s *statusLine) progress(p check.Progress) {
	switch {
	case s.quiet:
	case s.tty && time.Since(s.last) >= statusEvery:
		s.last = time.Now()
		fmt.Fprintf(s.err, "\r\x1b[K%s", formatProgress(p, true))
		s.shown = true
	case !s.tty && time.Since(s.last) >= s.every:
		s.last = time.Now()
		fmt.Fprintln(s.err, formatProgress(p, false))
	}
}

// formatProgress renders the progress as a bar (for a terminal) or a plain line:
// keys done of the DBSIZE total, the rate and the time left at that rate.
func formatProgress(p check.Progress, bar bool) string {
	what := "keys compared"
	if p.Phase == check.PhaseExtra {
		what = "slave keys looked up on the master"
	}
	frac := 1.0
	if p.Total > 0 {
		frac = min(1, float64(p.Done)/float64(p.Total))
	}
	rate, eta := 0.0, "-"
	if secs := p.Elapsed.Seconds(); secs > 0 && p.Done > 0 {
		rate = float64(p.Done) / secs
		left := time.Duration(float64(max(0, p.Total-p.Done)) / rate * float64(time.Second))
		eta = left.Round(time.Second).String()
	}
	line := fmt.Sprintf("%d/%d %s (%d%%), %.0f keys/s, ETA %s, %d differing",
		p.Done, p.Total, what, int(frac*100), rate, eta, p.Differing)
	if bar {
		n := int(frac * barWidth)
		return fmt.Sprintf("%s db%d [%s%s] %s", strings.Join(p.Slaves, ","), p.DB,
			strings.Repeat("#", n), strings.Repeat(".", barWidth-n), line)
	}
	return fmt.Sprintf("progress: %s db%d: %s", strings.Join(p.Slaves, ","), p.DB, line)
}

func (s *statusLine) clear() {
	if s.shown {
		fmt.Fprint(s.err, "\r\x1b[K")
		s.shown = false
		s.last = time.Time{} // redraw at the next progress
	}
}

func (s *statusLine) println(line string) {
	s.clear()
	fmt.Fprintln(s.out, line)
}

// Write lets the logger write through the status line.
func (s *statusLine) Write(p []byte) (int, error) {
	s.clear()
	return s.err.Write(p)
}
