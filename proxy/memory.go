package proxy

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/syncproxy/syncproxy/router"
)

// A transaction runs on the master as one script call, at EXEC: the master never
// sees the commands queued, so it cannot refuse them when over maxmemory as Redis
// does (Redis 7 counts the memory of the queued commands in used_memory and, while
// over maxmemory, refuses every command queued inside MULTI with OOM; EXEC then
// answers EXECABORT). The proxy does it for the master: it keeps a recent sample
// of the master's used_memory and maxmemory (INFO memory, at most every
// memSampleAge, asked when a transaction needs it) and adds the bytes the
// transaction queued. Only with maxmemory-policy noeviction: under an eviction
// policy Redis evicts instead of refusing.

// msgOOM is Redis' reply to a command refused over maxmemory.
const msgOOM = "OOM command not allowed when used memory > 'maxmemory'."

// memSampleAge is how old a sample of the master's memory may be before a
// transaction asks for a new one.
const memSampleAge = 100 * time.Millisecond

// memSample is the master's memory, as INFO memory reported it.
type memSample struct {
	used, max  int64
	noEviction bool
	at         time.Time
}

// masterMemory holds the last sample; one refresh runs at a time.
type masterMemory struct {
	sample     atomic.Pointer[memSample]
	refreshing atomic.Bool
}

// memory returns the last sample of the master's memory (nil before the first),
// and starts a refresh in the background when it is old.
func (s *Server) memory() *memSample {
	m := s.mem.sample.Load()
	if (m == nil || time.Since(m.at) > memSampleAge) && !s.closing.Load() && s.mem.refreshing.CompareAndSwap(false, true) {
		s.bgWG.Add(1)
		go func() {
			defer s.bgWG.Done()
			s.refreshMemory()
		}()
	}
	return m
}

// refreshMemory reads INFO memory from the master.
func (s *Server) refreshMemory() {
	defer s.mem.refreshing.Store(false)
	w := router.NewWaiter()
	r := &router.Request{Kind: router.KindRaw, Raw: buildCommand([][]byte{[]byte("INFO"), []byte("memory")})}
	w.Add(r)
	s.router.Master().Submit(0, r)
	w.Wait()
	if m, ok := parseMemory(bulkData(r.Reply)); ok {
		m.at = time.Now()
		s.mem.sample.Store(m)
	}
}

// parseMemory reads used_memory, maxmemory and maxmemory_policy from INFO memory.
func parseMemory(info []byte) (*memSample, bool) {
	m := &memSample{}
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(info))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		switch k {
		case "used_memory":
			m.used, _ = strconv.ParseInt(v, 10, 64)
			found++
		case "maxmemory":
			m.max, _ = strconv.ParseInt(v, 10, 64)
			found++
		case "maxmemory_policy":
			m.noEviction = v == "noeviction"
			found++
		}
	}
	return m, found == 3
}

// overMaxmemory reports whether the master, with extra more bytes, would be over
// its maxmemory and refuse (noeviction).
func (m *memSample) overMaxmemory(extra int64) bool {
	return m != nil && m.max > 0 && m.noEviction && m.used+extra > m.max
}
