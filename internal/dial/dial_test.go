package dial_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/dial"
	"github.com/syncproxy/syncproxy/internal/redistest"
)

const timeout = 5 * time.Second

// TestDialACLUser: an ACL user logs in, the DB is selected and the setup
// commands run, on a connection redigo then uses.
func TestDialACLUser(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, "--requirepass", "admin-pw", "--user", "app", "on", ">app-pw", "~*", "&*", "+@all")
	c, err := dial.Redigo(context.Background(), dial.Target{
		Role: "master", Addr: srv.Addr, Username: "app", Password: "app-pw", DB: 3,
		Setup: [][]string{{"CLIENT", "SETNAME", "dialtest"}, {"SCRIPT", "LOAD", "return 1"}}, Timeout: timeout,
	}, timeout, timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for cmd, want := range map[string]string{"ACL WHOAMI": "app", "CLIENT GETNAME": "dialtest"} {
		args := strings.Fields(cmd)
		if got, err := redis.String(c.Do(args[0], args[1])); err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", cmd, got, err, want)
		}
	}
	if _, err := c.Do("SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	admin := srv.Dial(t)
	defer admin.Close()
	admin.Do("AUTH", "admin-pw")
	admin.Do("SELECT", 3)
	if got, err := redis.String(admin.Do("GET", "k")); err != nil || got != "v" {
		t.Errorf("GET k in DB 3: %q, %v", got, err)
	}
}

// TestDialRefused: each failure is worded "<role> <addr>: <step>: <cause>" and
// says whether the server refused the connection.
func TestDialRefused(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, "--requirepass", "right")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	cases := map[string]struct {
		target  dial.Target
		want    string // the whole message, or its prefix when it ends with "..."
		refused bool
	}{
		"wrong password": {dial.Target{Role: "master", Addr: srv.Addr, Password: "wrong"},
			"master " + srv.Addr + ": auth: WRONGPASS invalid username-password pair or user is disabled.", true},
		"unknown user": {dial.Target{Role: "master", Addr: srv.Addr, Username: "nobody", Password: "right"},
			"master " + srv.Addr + ": auth: WRONGPASS invalid username-password pair or user is disabled.", true},
		"no password": {dial.Target{Role: "slave-1", Addr: srv.Addr},
			"slave-1 " + srv.Addr + ": ping: NOAUTH Authentication required.", true},
		"bad setup": {dial.Target{Role: "master", Addr: srv.Addr, Password: "right", Setup: [][]string{{"SCRIPT", "LOAD", "return ("}}},
			"master " + srv.Addr + ": script load: ERR Error compiling script...", true},
		"bad db": {dial.Target{Role: "master", Addr: srv.Addr, Password: "right", DB: 99},
			"master " + srv.Addr + ": select: ERR DB index is out of range", true},
		"nothing listening": {dial.Target{Role: "sentinel", Addr: closed},
			"sentinel " + closed + ": dial: dial tcp " + closed + ": connect: connection refused", false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			tc.target.Timeout = timeout
			c, _, err := dial.Dial(context.Background(), tc.target)
			if err == nil {
				c.Close()
				t.Fatal("no error")
			}
			checkError(t, err, tc.want, tc.refused)
		})
	}
}

// TestDialTimeout: a server that accepts the connection and never answers
// fails the dial once Timeout passed, as an outage, not a refusal.
func TestDialTimeout(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	srv.Pause(t)
	defer srv.Resume(t)
	start := time.Now()
	_, _, err := dial.Dial(context.Background(), dial.Target{Role: "master", Addr: srv.Addr, Timeout: 200 * time.Millisecond})
	checkError(t, err, "master "+srv.Addr+": ping: read tcp ...", false)
	if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "i/o timeout") {
		t.Errorf("not a timeout: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
}

// TestDialTLS: TLS verified for the host of the address when the configuration
// names none; settings that do not match the server's are refusals that say so.
func TestDialTLS(t *testing.T) {
	t.Parallel()
	certs, other := redistest.NewCerts(t), redistest.NewCerts(t)
	srv := redistest.StartWith(t, redistest.Options{TLS: certs, Args: []string{"--requirepass", "pw"}})
	mutual := redistest.StartWith(t, redistest.Options{TLS: certs, Args: []string{"--tls-auth-clients", "yes"}})
	noName := func(withCert bool) *tls.Config {
		conf := certs.ClientTLS(withCert)
		conf.ServerName = ""
		return conf
	}
	c, err := dial.Redigo(context.Background(), dial.Target{Role: "master", Addr: srv.Addr, Password: "pw", TLS: noName(false), Timeout: timeout}, timeout, timeout)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := redis.String(c.Do("PING")); err != nil || got != "PONG" {
		t.Errorf("PING over TLS: %q, %v", got, err)
	}
	c.Close()
	if c, _, err := dial.Dial(context.Background(), dial.Target{Role: "slave-1", Addr: mutual.Addr, TLS: noName(true), Timeout: timeout}); err != nil {
		t.Errorf("with a client certificate: %v", err)
	} else {
		c.Close()
	}

	wrongName := certs.ClientTLS(false)
	wrongName.ServerName = "redis.example"
	cases := map[string]struct {
		target dial.Target
		want   string
	}{
		"no TLS":                {dial.Target{Addr: srv.Addr}, "master " + srv.Addr + ": ping: the server closed the connection (does it expect TLS?)"},
		"unknown CA":            {dial.Target{Addr: srv.Addr, TLS: other.ClientTLS(false)}, "master " + srv.Addr + ": tls: tls: failed to verify certificate: x509: certificate signed by unknown authority..."},
		"wrong name":            {dial.Target{Addr: srv.Addr, TLS: wrongName}, "master " + srv.Addr + ": tls: tls: failed to verify certificate: x509: certificate is valid for ..."},
		"no client certificate": {dial.Target{Addr: mutual.Addr, TLS: noName(false)}, "master " + mutual.Addr + ": ..."},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			tc.target.Role, tc.target.Timeout = "master", timeout
			c, _, err := dial.Dial(context.Background(), tc.target)
			if err == nil {
				c.Close()
				t.Fatal("no error")
			}
			checkError(t, err, tc.want, true)
			if name == "no client certificate" && !strings.Contains(err.Error(), "certificate") {
				t.Errorf("%v: does not say the certificate is missing", err)
			}
		})
	}
}

// checkError checks a dial's error: its message (a prefix when want ends with
// "...") and whether it is a refusal.
func checkError(t *testing.T, err error, want string, refused bool) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	got := err.Error()
	if prefix, ok := strings.CutSuffix(want, "..."); ok && !strings.HasPrefix(got, prefix) || !ok && got != want {
		t.Errorf("error %q, want %q", got, want)
	}
	if dial.Refused(err) != refused {
		t.Errorf("%v: Refused %v, want %v", err, !refused, refused)
	}
}
