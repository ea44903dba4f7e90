package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
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
	if s.cfg.MasterPassword != "" {
		if err := auth(c, br, deadline, s.cfg.MasterUser, s.cfg.MasterPassword); err != nil {
			c.Close()
			return nil, nil, err
		}
	}
	return c, br, nil
}

// auth sends AUTH [user] password on c and checks that the reply is +OK.
func auth(c net.Conn, br *bufio.Reader, deadline time.Time, user, password string) error {
	args := [][]byte{[]byte("AUTH"), []byte(password)}
	if user != "" {
		args = [][]byte{[]byte("AUTH"), []byte(user), []byte(password)}
	}
	c.SetDeadline(deadline)
	if _, err := c.Write(buildCommand(args)); err != nil {
		return err
	}
	reply, err := router.ReadFrame(br, nil)
	if err != nil {
		return err
	}
	if reply[0] == '-' {
		return errors.New("proxy: master refused AUTH: " + string(bytes.TrimSpace(reply[1:])))
	}
	c.SetDeadline(time.Time{})
	return nil
}
