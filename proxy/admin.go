package proxy

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The admin listener (--admin) serves:
//   /metrics     Prometheus metrics (see metrics.go, plus Go runtime and process)
//   /healthz     200 when the master is reachable and the sync subscription runs
//   /status.json the master and each slave, as the status page shows them, and
//                the last 15 minutes sampled every second (series.go)
//   /            the status page: a table and charts drawn in SVG by the page
//                itself (no external assets), refreshed live
//   POST /master-reset/confirm  ends a master-reset hold, with the rights the
//                SYNCPROXY command needs (see reset.go)

//go:embed status.html
var statusPage []byte

// Status is what /status.json reports.
type Status struct {
	Version    string        `json:"version"`
	UptimeS    int64         `json:"uptime_seconds"`
	Clients    int64         `json:"connected_clients"`
	Blocked    int64         `json:"blocked_clients"`
	Commands   int64         `json:"total_commands_processed"`
	Master     BackendStatus `json:"master"`
	Subscribed bool          `json:"sync_subscribed"`
	LatestSeq  int64         `json:"sync_latest_seq"`
	Slaves     []SlaveStatus `json:"slaves"`
	Healthy    bool          `json:"healthy"`
	Problems   []string      `json:"problems"`
	// Series is the last 15 minutes, sampled every second (series.go); nil
	// from Status, set by /status.json.
	Series *Series `json:"series,omitempty"`
}

// BackendStatus is one backend's connection state and traffic.
type BackendStatus struct {
	Name        string `json:"name"`
	Addr        string `json:"addr"`
	Up          bool   `json:"up"`
	Requests    int64  `json:"requests"`
	Errors      int64  `json:"errors"`
	Outstanding int64  `json:"outstanding"`
}

// SlaveStatus is one slave's replication state.
type SlaveStatus struct {
	BackendStatus
	State       string `json:"state"`
	Applied     int64  `json:"applied_seq"`
	LagMessages int64  `json:"lag_messages"`
	LagMs       int64  `json:"lag_ms"`
	Reads       int64  `json:"reads"`
	Resyncs     int64  `json:"resyncs"`
	CatchUps    int64  `json:"catchups"`
	Role        string `json:"role"` // applier (holds the slave's lease) or follower
	ApplyCalls  int64  `json:"apply_calls"`
	// ResyncKeysCopied of ResyncKeysTotal: the progress of the running (or
	// last) full resync.
	ResyncKeysCopied int64 `json:"resync_keys_copied"`
	ResyncKeysTotal  int64 `json:"resync_keys_total"`
}

// Status returns the proxy's current state.
func (s *Server) Status() Status {
	m := s.router.Master()
	st := Status{
		Version:    Version,
		UptimeS:    int64(time.Since(s.start).Seconds()),
		Clients:    s.clients.Load(),
		Blocked:    s.waiters.n.Load(),
		Commands:   s.commands.Load(),
		Master:     BackendStatus{Name: m.Name(), Addr: m.Addr(), Up: m.Up(), Requests: m.Stats.Requests.Load(), Errors: m.Stats.Failed.Load(), Outstanding: m.Outstanding.Load()},
		Subscribed: s.repl.Subscribed(),
		LatestSeq:  s.repl.Latest(),
		Slaves:     []SlaveStatus{},
		Problems:   []string{},
	}
	for _, sl := range s.router.Slaves() {
		a := applierOf(sl)
		b := sl.Backend
		st.Slaves = append(st.Slaves, SlaveStatus{
			BackendStatus: BackendStatus{Name: a.Name(), Addr: a.Addr(), Up: b.Up(), Requests: b.Stats.Requests.Load(), Errors: b.Stats.Failed.Load(), Outstanding: b.Outstanding.Load()},
			State:         a.State().String(),
			Applied:       a.Applied(),
			LagMessages:   a.LagMessages(),
			LagMs:         a.LagMs(),
			Reads:         sl.Reads.Load(),
			Resyncs:       a.Resyncs(),
			CatchUps:      a.CatchUps(),
			Role:          role(a),
			ApplyCalls:    a.Applies(),
		})
		last := &st.Slaves[len(st.Slaves)-1]
		last.ResyncKeysCopied, last.ResyncKeysTotal = a.ResyncProgress()
	}
	if !st.Master.Up {
		st.Problems = append(st.Problems, "master "+m.Addr()+" unreachable")
	}
	if !st.Subscribed {
		st.Problems = append(st.Problems, "sync subscription not running")
	}
	st.Healthy = len(st.Problems) == 0
	return st
}

// AdminHandler returns the admin listener's handler.
func (s *Server) AdminHandler() http.Handler {
	series := s.startSampler()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{s}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: promLog{s}}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		st := s.Status()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if !st.Healthy {
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, p := range st.Problems {
				w.Write([]byte(p + "\n"))
			}
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("POST /master-reset/confirm", s.serveConfirmReset)
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w) // compact: the page fetches it every second
		st := s.Status()
		if series != nil {
			st.Series = series.snapshot()
		}
		enc.Encode(st)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(statusPage)
	})
	return mux
}

type promLog struct{ s *Server }

func (l promLog) Println(v ...interface{}) {
	l.s.log.Warn().Interface("error", v).Msg("metrics scrape")
}

// ServeAdmin serves the admin endpoints on ln until Shutdown.
func (s *Server) ServeAdmin(ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.AdminHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.admin = append(s.admin, hs)
	s.mu.Unlock()
	s.log.Info().Str("addr", ln.Addr().String()).Msg("admin listening (/metrics, /healthz, /status.json, /)")
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return ErrServerClosed
}

// closeAdmin stops the admin listeners.
func (s *Server) closeAdmin() {
	s.mu.Lock()
	list := s.admin
	s.admin = nil
	s.mu.Unlock()
	for _, hs := range list {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		hs.Shutdown(ctx)
		cancel()
	}
	s.stopSampler()
}
