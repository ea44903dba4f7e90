package proxy

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/syncproxy/syncproxy/router"
)

// Reload applies the settings of cfg that can change while serving, and keeps
// the running value of the others, each logged as needing a restart; it then
// returns an error wrapping ErrRestartNeeded. An invalid cfg changes nothing.
//
// Slaves added are resynced if they have no replication position and enter the
// read set once online; slaves removed leave it at once, and their applier and
// backend stop once the reads in flight on them are done (or failed over to the
// master). Limits apply to every connection at its next read or write,
// idle-timeout and max-clients to connections accepted afterwards; a new
// password is asked of new connections and new AUTHs, while authenticated
// clients stay so, as with Redis' CONFIG SET requirepass.
func (s *Server) Reload(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.closing.Load() {
		return ErrServerClosed
	}
	old := s.config()
	next := *old
	changed, refused := mergeConfig(&next, &cfg)
	// The running values of the refused settings may not fit with the new
	// ones (a new slave that is the running master).
	if err := next.Validate(); err != nil {
		return fmt.Errorf("%w (with the running values of the settings that need a restart)", err)
	}
	for _, sl := range next.Slaves {
		if sl == s.MasterAddr() { // (with Sentinel, Validate does not know it)
			return fmt.Errorf("config: slaves: %q is the master", sl)
		}
	}
	for _, name := range refused {
		s.log.Warn().Str("setting", name).Msg("configuration reload: " + name + " changed, but only a restart applies it; keeping the running value")
	}

	s.cur.Store(&next)
	s.limits.Store(limitsOf(&next))
	s.router.SetReadOptions(readOptionsOf(&next))
	if next.HealthInterval != old.HealthInterval || next.HealthFailures != old.HealthFailures {
		s.repl.SetHealth(next.HealthInterval, next.HealthFailures)
	}
	added, removed := s.reloadSlaves(&next)

	ev := s.log.Info().Strs("changed", changed)
	if len(added) > 0 {
		ev = ev.Strs("slaves_added", added)
	}
	if len(removed) > 0 {
		ev = ev.Strs("slaves_removed", removed)
	}
	if len(refused) > 0 {
		ev = ev.Strs("need_restart", refused)
	}
	for _, name := range changed {
		if name == "idle-timeout" || name == "max-clients" {
			ev = ev.Str("note", "idle-timeout and max-clients apply to connections accepted from now on")
			break
		}
	}
	ev.Msg("configuration reloaded")
	s.metrics.reloads.Add(1)
	if len(refused) > 0 {
		return fmt.Errorf("%w %s", ErrRestartNeeded, strings.Join(refused, ", "))
	}
	return nil
}

// reloadSlaves makes the read set cfg's slaves, with cfg's weights, in one step;
// it returns the addresses added and removed. Slaves kept keep their name,
// backend, applier and counters.
func (s *Server) reloadSlaves(cfg *Config) (added, removed []string) {
	cur := s.router.Slaves()
	byAddr := map[string]*router.Slave{}
	for _, sl := range cur {
		byAddr[applierOf(sl).Addr()] = sl
	}
	var list []*router.Slave
	for _, addr := range cfg.Slaves {
		sl := byAddr[addr]
		if sl == nil {
			ep := s.slaveEndpoint(addr)
			a, err := s.repl.AddSlave(ep)
			if err != nil {
				// Only once closed, which Shutdown does after a Reload ends.
				s.log.Error().Err(err).Str("addr", addr).Msg("configuration reload: slave not added")
				continue
			}
			sl = s.newSlave(a)
			added = append(added, addr)
		}
		delete(byAddr, addr)
		list = append(list, sl)
	}
	s.router.SetSlaves(list, weightsOf(cfg, list))
	for _, sl := range cur {
		if addr := applierOf(sl).Addr(); byAddr[addr] == sl {
			removed = append(removed, addr)
			s.stopSlave(sl)
		}
	}
	return added, removed
}

// stopSlave stops the applier and the backend of a slave out of the read set.
// Reads in flight on it are waited for, up to the backend timeout (they end by
// then anyway); one submitted after the close fails and goes to the master.
func (s *Server) stopSlave(sl *router.Slave) {
	s.repl.RemoveSlave(applierOf(sl))
	deadline := time.Now().Add(s.cfg.BackendTimeout)
	for sl.Backend.Outstanding.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	sl.Backend.Close()
	s.log.Info().Str("slave", sl.Backend.Name()).Str("addr", sl.Backend.Addr()).Msg("slave removed from the configuration: stopped")
}

// mergeConfig copies into dst the reloadable settings in which src differs, and
// returns the names of those and of the other settings that differ.
func mergeConfig(dst, src *Config) (changed, refused []string) {
	dv, sv := reflect.ValueOf(dst).Elem(), reflect.ValueOf(src).Elem()
	t := dv.Type()
	for i := 0; i < t.NumField(); i++ {
		if sameSetting(dv.Field(i), sv.Field(i)) {
			continue
		}
		name := SettingName(t.Field(i))
		if !Reloadable(t.Field(i)) {
			refused = append(refused, name)
			continue
		}
		dv.Field(i).Set(sv.Field(i))
		changed = append(changed, name)
	}
	return changed, refused
}

// Reloadable reports whether Reload changes the setting of a Config field while
// serving (its tag reload:"true"); any other needs a restart. The logger's
// settings are the caller's to apply (cmd/syncproxy does); Reload records them.
func Reloadable(f reflect.StructField) bool { return f.Tag.Get("reload") == "true" }

// sameSetting compares two values of a setting; an empty list or map is no list.
func sameSetting(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Slice, reflect.Map:
		if a.Len() == 0 && b.Len() == 0 {
			return true
		}
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

// weightsOf returns the weight of each slave of list, as c gives them.
func weightsOf(c *Config, list []*router.Slave) []int {
	w := make([]int, len(list))
	for i, sl := range list {
		w[i] = c.Weights[applierOf(sl).Addr()]
	}
	return w
}

// readOptionsOf returns the read options c sets.
func readOptionsOf(c *Config) router.ReadOptions {
	policy, _ := router.ParseReadPolicy(c.ReadPolicy) // Validate checked it
	return router.ReadOptions{Policy: policy, MaxLagMessages: c.MaxLagMessages, MaxLagMs: c.MaxLagMs}
}
