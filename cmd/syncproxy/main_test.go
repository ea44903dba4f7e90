package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackendPasswords: passwords come from the flags, else from the config file,
// else from the environment.
func TestBackendPasswords(t *testing.T) {
	t.Setenv(masterPasswordEnv, "env-m")
	t.Setenv(slavePasswordEnv, "env-s")
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("master-password: file-m\nslave-user: app\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args         []string
		master, slav string
	}{
		{[]string{"--master", "127.0.0.1:6379"}, "env-m", "env-s"},
		{[]string{"--master", "127.0.0.1:6379", "--master-password", "flag-m"}, "flag-m", "env-s"},
		{[]string{"--master", "127.0.0.1:6379", "--config", file}, "file-m", "env-s"},
		{[]string{"--master", "127.0.0.1:6379", "--config", file, "--master-password", "flag-m", "--slave-password", "flag-s"}, "flag-m", "flag-s"},
	} {
		cfg, _, err := parseConfig(tc.args, io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if cfg.MasterPassword != tc.master || cfg.SlavePassword != tc.slav {
			t.Errorf("%v: master password %q, slave password %q; want %q, %q", tc.args, cfg.MasterPassword, cfg.SlavePassword, tc.master, tc.slav)
		}
	}
}

// TestTLSFlags: the TLS flags reach the configuration, and a missing file is a
// one-line usage error naming the flag and the file.
func TestTLSFlags(t *testing.T) {
	cfg, _, err := parseConfig([]string{"--master", "127.0.0.1:6379", "--backend-tls",
		"--backend-tls-server-name", "redis.internal", "--master-user", "app", "--master-password", "pw",
		"--slave-user", "app2", "--slave-password", "pw2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.BackendTLS || cfg.BackendTLSServerName != "redis.internal" || cfg.MasterUser != "app" || cfg.SlaveUser != "app2" {
		t.Errorf("parsed %+v", cfg)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, args := range [][]string{
		{"--tls-cert", missing, "--tls-key", missing},
		{"--tls-cert", missing},
		{"--backend-tls", "--backend-tls-ca", missing},
	} {
		var stderr strings.Builder
		if code := run(append([]string{"--master", "127.0.0.1:6379"}, args...), io.Discard, &stderr, nil); code != 2 {
			t.Errorf("%v: exit status %d, want 2", args, code)
		}
		if msg := stderr.String(); strings.Count(msg, "\n") != 1 || !strings.Contains(msg, args[0][2:]) {
			t.Errorf("%v: stderr %q, want one line naming %s", args, msg, args[0])
		}
	}
}
