package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/syncproxy/syncproxy/router"
)

// dialMaster opens a dedicated connection to the master (for WATCH and for
// subscriptions) as the backend links open theirs: TCP, then the TLS handshake
// and AUTH when configured, all within the backend dial timeout. The reader must be
// used for everything read from the connection afterwards.
func (s *Server) dialMaster() (net.Conn, *bufio.Reader, error) {
	deadline := time.Now().Add(s.cfg.DialTimeout())
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", s.cfg.Master)
	if err != nil {
		return nil, nil, err
	}
	if s.masterTLS != nil {
		tc := tls.Client(c, s.masterTLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, nil, err
		}
		c = tc
	}
	br := bufio.NewReader(c)
	if err := s.masterHandshake(c, br, deadline); err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, br, nil
}

// masterHandshake sends AUTH when a password is configured, and PING, and checks
// their replies: a master that refuses the connection (TLS, credentials) is
// found here, with the reason, rather than at the client's first command.
func (s *Server) masterHandshake(c net.Conn, br *bufio.Reader, deadline time.Time) error {
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
		return s.refusal(err)
	}
	for i := 0; i < n; i++ {
		reply, err := router.ReadFrame(br, nil)
		if err != nil {
			return s.refusal(err)
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
func (s *Server) refusal(err error) error {
	var oe *net.OpError
	closed := errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
	switch {
	case errors.As(err, &oe) && oe.Op == "remote error":
		return errors.New("proxy: master refused TLS: " + err.Error())
	case closed && s.masterTLS == nil:
		return errors.New("proxy: master closed the connection (does it expect TLS?)")
	case closed && len(s.masterTLS.Certificates) == 0:
		return errors.New("proxy: master closed the TLS connection (does it require a client certificate?)")
	}
	return err
}
