package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
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
	c.s.dmu.Lock()
	delete(c.s.dedicated, c)
	c.s.dmu.Unlock()
	return c.Conn.Close()
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
	s.dmu.Lock()
	defer s.dmu.Unlock()
	for c := range s.dedicated {
		if c.addr != addr {
			c.switched.Store(&addr)
			c.Conn.Close()
			delete(s.dedicated, c)
		}
	}
}

// dialMaster opens a dedicated connection to the master (for WATCH and for
// subscriptions) as the backend links open theirs: TCP, then the TLS handshake
// and AUTH when configured, all within the backend dial timeout. The reader must be
// used for everything read from the connection afterwards.
func (s *Server) dialMaster() (net.Conn, *bufio.Reader, error) {
	target := s.master.Load()
	deadline := time.Now().Add(s.cfg.DialTimeout())
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", target.addr)
	if err != nil {
		return nil, nil, err
	}
	if target.tls != nil {
		tc := tls.Client(c, target.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, nil, err
		}
		c = tc
	}
	br := bufio.NewReader(c)
	if err := s.masterHandshake(c, br, deadline, target); err != nil {
		c.Close()
		return nil, nil, err
	}
	mc := &masterConn{Conn: c, s: s, addr: target.addr}
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if now := s.MasterAddr(); now != target.addr {
		// Replaced while dialing: closeDedicated has run already.
		c.Close()
		return nil, nil, errors.New("master switched to " + now)
	}
	s.dedicated[mc] = struct{}{}
	return mc, br, nil
}

// masterHandshake sends AUTH when a password is configured, and PING, and checks
// their replies: a master that refuses the connection (TLS, credentials) is
// found here, with the reason, rather than at the client's first command.
func (s *Server) masterHandshake(c net.Conn, br *bufio.Reader, deadline time.Time, target *masterTarget) error {
	var frames []byte
	n := 1
	if s.cfg.MasterPassword != "" {
		args := [][]byte{[]byte("AUTH"), []byte(s.cfg.MasterPassword)}
		if s.cfg.MasterUser != "" {
			args = [][]byte{[]byte("AUTH"), []byte(s.cfg.MasterUser), []byte(s.cfg.MasterPassword)}
		}
		frames = buildCommand(args)
		n = 2
	}
	frames = append(frames, "*1\r\n$4\r\nPING\r\n"...)
	c.SetDeadline(deadline)
	if _, err := c.Write(frames); err != nil {
		return refusal(err, target.tls)
	}
	for i := 0; i < n; i++ {
		reply, err := router.ReadFrame(br, nil)
		if err != nil {
			return refusal(err, target.tls)
		}
		if reply[0] == '-' {
			return errors.New("proxy: master refused the connection: " + string(bytes.TrimSpace(reply[1:])))
		}
	}
	c.SetDeadline(time.Time{})
	return nil
}

// refusal words an I/O error of the handshake: a TLS alert, or a connection
// closed at once, most likely means TLS settings that do not match the master's.
func refusal(err error, conf *tls.Config) error {
	var oe *net.OpError
	closed := errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
	switch {
	case errors.As(err, &oe) && oe.Op == "remote error":
		return errors.New("proxy: master refused TLS: " + err.Error())
	case closed && conf == nil:
		return errors.New("proxy: master closed the connection (does it expect TLS?)")
	case closed && len(conf.Certificates) == 0:
		return errors.New("proxy: master closed the TLS connection (does it require a client certificate?)")
	}
	return err
}
