package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"github.com/syncproxy/syncproxy/internal/dial"
	"github.com/syncproxy/syncproxy/replicate"
)

// masterTarget is where the master is: its address and the TLS settings for it.
type masterTarget struct {
	addr string
	tls  *tls.Config // nil without backend TLS
}

func (s *Server) newTarget(addr string) *masterTarget {
	return &masterTarget{addr: addr, tls: backendTLSFor(s.backendTLS, addr)}
}

// MasterAddr returns the master's current address (it changes when Sentinel
// promotes a replica).
func (s *Server) MasterAddr() string { return s.master.Load().addr }

// masterEndpoint is the master as the replicator reaches it.
func (s *Server) masterEndpoint(t *masterTarget) replicate.Endpoint {
	return replicate.Endpoint{
		Name:     "master",
		Addr:     t.addr,
		Username: s.cfg.MasterUser,
		Password: s.cfg.MasterPassword,
		TLS:      t.tls,
	}
}

// masterConn is a dedicated master connection; the server tracks them, to close
// those to an old master when Sentinel replaced it.
type masterConn struct {
	net.Conn
	s        *Server
	addr     string
	switched atomic.Pointer[string] // the new master's address, once replaced
}

// Close closes the connection and forgets it.
func (c *masterConn) Close() error {
	c.s.dedicated.mu.Lock()
	delete(c.s.dedicated.conns, c)
	c.s.dedicated.mu.Unlock()
	return c.Conn.Close()
}

// dedicatedConns are the dedicated master connections open (WATCH, SUBSCRIBE).
type dedicatedConns struct {
	mu    sync.Mutex
	conns map[*masterConn]struct{}
}

// masterDown words the error of a dedicated master connection that failed: as
// the backends word it, "switched" when the master was replaced.
func (s *Server) masterDown(c net.Conn, err error) string {
	if mc, ok := c.(*masterConn); ok {
		if to := mc.switched.Load(); to != nil {
			return "ERR syncproxy: master switched to " + *to + ", retry"
		}
	}
	msg := "ERR syncproxy: master " + s.MasterAddr() + " is unavailable"
	if err != nil {
		msg += " (" + sanitize([]byte(err.Error()), 200) + ")"
	}
	return msg
}

var errReplaced = errors.New("proxy: the master was replaced")

// replaced reports whether c, a dedicated master connection, leads to a master
// that Sentinel replaced; it is marked so.
func (s *Server) replaced(c net.Conn) bool {
	mc, ok := c.(*masterConn)
	if !ok {
		return false
	}
	if now := s.MasterAddr(); now != mc.addr {
		mc.switched.CompareAndSwap(nil, &now)
		return true
	}
	return false
}

// closeDedicated closes the dedicated connections to other masters than addr:
// a WATCH or a subscription does not survive a failover (as with Redis).
func (s *Server) closeDedicated(addr string) {
	d := &s.dedicated
	d.mu.Lock()
	defer d.mu.Unlock()
	for c := range d.conns {
		if c.addr != addr {
			c.switched.Store(&addr)
			c.Conn.Close()
			delete(d.conns, c)
		}
	}
}

// dialMaster opens a dedicated connection to the master (for WATCH and for
// subscriptions) as the backend links open theirs, within the backend dial
// timeout. The reader must be used for everything read from the connection
// afterwards.
func (s *Server) dialMaster() (net.Conn, *bufio.Reader, error) {
	target := s.master.Load()
	c, br, err := dial.Dial(context.Background(), s.masterDialTarget(target))
	if err != nil {
		return nil, nil, err
	}
	mc := &masterConn{Conn: c, s: s, addr: target.addr}
	s.dedicated.mu.Lock()
	defer s.dedicated.mu.Unlock()
	if now := s.MasterAddr(); now != target.addr {
		// Replaced while dialing: closeDedicated has run already.
		c.Close()
		return nil, nil, errors.New("master switched to " + now)
	}
	s.dedicated.conns[mc] = struct{}{}
	return mc, br, nil
}

// masterDialTarget is the master at t, reached with the master's credentials.
func (s *Server) masterDialTarget(t *masterTarget) dial.Target {
	// A master running a script answers BUSY to the PING: it is alive (and
	// SCRIPT KILL needs a connection then).
	return dial.Target{Role: "master", Addr: t.addr, Username: s.cfg.MasterUser, Password: s.cfg.MasterPassword,
		TLS: t.tls, Timeout: s.cfg.DialTimeout(), OnBusy: func() {}}
}
