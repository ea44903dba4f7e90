package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/proxy"
)

// TestBackendPasswords: passwords come from the flags, else from the config file,
// else from the environment.
func TestBackendPasswords(t *testing.T) {
	t.Setenv("SYNCPROXY_MASTER_PASSWORD", "env-m")
	t.Setenv("SYNCPROXY_SLAVE_PASSWORD", "env-s")
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

// TestSentinelFlags: --sentinel and --sentinel-master replace --master, the
// password may come from the environment, and the combinations that make no
// sense are one-line usage errors.
func TestSentinelFlags(t *testing.T) {
	t.Setenv("SYNCPROXY_SENTINEL_PASSWORD", "env-sp")
	cfg, _, err := parseConfig([]string{"--sentinel", "127.0.0.1:26379, 127.0.0.1:26380", "--sentinel-master", "mymaster",
		"--slaves", "127.0.0.1:7001"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Sentinels) != 2 || cfg.Sentinels[1] != "127.0.0.1:26380" || cfg.SentinelMaster != "mymaster" ||
		cfg.SentinelPassword != "env-sp" || cfg.Demo() {
		t.Errorf("parsed %+v", cfg)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--master", "127.0.0.1:6379", "--sentinel", "127.0.0.1:26379", "--sentinel-master", "m"}, "exclude each other"},
		{[]string{"--sentinel", "127.0.0.1:26379"}, "sentinel needs sentinel-master"},
		{[]string{"--master", "127.0.0.1:6379", "--sentinel-master", "m"}, "sentinel-master needs sentinel"},
		{[]string{"--sentinel", "localhost", "--sentinel-master", "m"}, "not HOST:PORT"},
		{[]string{"--sentinel", "127.0.0.1:26379", "--sentinel-master", "m", "--sentinel-user", "u", "--sentinel-password", ""}, "sentinel-user needs sentinel-password"},
	} {
		if tc.want == "sentinel-user needs sentinel-password" {
			t.Setenv("SYNCPROXY_SENTINEL_PASSWORD", "")
		}
		var stderr strings.Builder
		if code := run(tc.args, io.Discard, &stderr, nil); code != 2 {
			t.Errorf("%v: exit status %d, want 2", tc.args, code)
		}
		if msg := stderr.String(); strings.Count(msg, "\n") != 1 || !strings.Contains(msg, tc.want) {
			t.Errorf("%v: stderr %q, want one line with %q", tc.args, msg, tc.want)
		}
	}
}

// TestSentinelUnreachable: when no sentinel answers, the proxy does not start,
// and says which sentinels it asked.
func TestSentinelUnreachable(t *testing.T) {
	var stderr strings.Builder
	code := run([]string{"--sentinel", "127.0.0.1:1,127.0.0.1:2", "--sentinel-master", "mymaster",
		"--backend-dial-timeout", "200ms", "--log-level", "disabled"}, io.Discard, &stderr, nil)
	if code == 0 {
		t.Fatalf("exit status 0 with no sentinel reachable")
	}
	msg := stderr.String()
	if !strings.Contains(msg, `no sentinel gave the address of master "mymaster"`) ||
		!strings.Contains(msg, "127.0.0.1:1") || !strings.Contains(msg, "127.0.0.1:2") {
		t.Errorf("stderr %q", msg)
	}
}

// FuzzParseDBs: --dbs gives sorted, distinct, bounded DB numbers, or an error.
func FuzzParseDBs(f *testing.F) {
	for _, s := range []string{"0-15", "0,3,5-7", "7", "3-1", "-1", "0-99999999999", "a", "1,,2", " 2 - 4 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		dbs, err := parseDBs(s)
		if err != nil {
			return
		}
		for i, db := range dbs {
			if db < 0 || db > maxCheckDB || (i > 0 && dbs[i-1] >= db) {
				t.Fatalf("parseDBs(%q) = %v", s, dbs)
			}
		}
	})
}

// TestWriteReplyTimeoutFlag: --write-reply-timeout sets the master's reply bound;
// it defaults to a generous 60s and must be positive.
func TestWriteReplyTimeoutFlag(t *testing.T) {
	cfg, _, err := parseConfig([]string{"--master", "127.0.0.1:6379", "--write-reply-timeout", "90s"}, io.Discard)
	if err != nil || cfg.WriteReplyTimeout != 90*time.Second {
		t.Fatalf("parsed %v, %v", cfg.WriteReplyTimeout, err)
	}
	cfg, _, err = parseConfig([]string{"--master", "127.0.0.1:6379"}, io.Discard)
	if err != nil || cfg.WriteReplyTimeout != 60*time.Second {
		t.Fatalf("default %v, %v", cfg.WriteReplyTimeout, err)
	}
	var stderr strings.Builder
	if code := run([]string{"--master", "127.0.0.1:6379", "--write-reply-timeout", "0s"}, io.Discard, &stderr, nil); code != 2 ||
		!strings.Contains(stderr.String(), "write-reply-timeout") {
		t.Errorf("--write-reply-timeout 0s: exit status %d, stderr %q", code, stderr.String())
	}
}

// TestSettingsDeclaredOnce: every flag but --config is a config-file key and
// every key a flag, but the file-only weights and users; README's settings table
// lists every flag, and no other.
func TestSettingsDeclaredOnce(t *testing.T) {
	cfg := proxy.DefaultConfig()
	fs, _ := newFlagSet(&cfg)
	flags := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { flags[f.Name] = true })
	keys := map[string]bool{}
	typ := reflect.TypeOf(cfg)
	for i := 0; i < typ.NumField(); i++ {
		keys[proxy.SettingName(typ.Field(i))] = true
	}
	for name := range flags {
		if !keys[name] && name != "config" {
			t.Errorf("flag --%s is no config-file key", name)
		}
	}
	for key := range keys {
		if !flags[key] && key != "weights" && key != "users" {
			t.Errorf("config-file key %s is no flag", key)
		}
	}

	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	table, _, _ := strings.Cut(string(readme[strings.Index(string(readme), "| Flag | Default | Meaning |"):]), "\n\n")
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `--([a-z-]+)").FindAllStringSubmatch(table, -1) {
		listed[m[1]] = true
	}
	for name := range flags {
		if !listed[name] {
			t.Errorf("README's settings table does not list --%s", name)
		}
	}
	for name := range listed {
		if !flags[name] {
			t.Errorf("README's settings table lists --%s, which is no flag", name)
		}
	}
}

// TestFlagsOverFile: a flag wins over the file even when it gives the default
// value; a setting given by neither keeps its default.
func TestFlagsOverFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	yaml := "master: 127.0.0.1:6379\nlisten: 127.0.0.1:1\nbackend-conns: 4\nread-policy: any\nslaves: [127.0.0.1:7001]\nproto-max-bulk-len: 1mb\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := parseConfig([]string{"--config", file, "--listen", "127.0.0.1:7379", "--backend-conns", "2",
		"--slaves", "127.0.0.1:7002, 127.0.0.1:7003", "--idle-timeout", "1m"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := proxy.DefaultConfig()
	want.Master, want.Listen, want.BackendConns, want.ReadPolicy = "127.0.0.1:6379", "127.0.0.1:7379", 2, "any"
	want.Slaves, want.ProtoMaxBulkLen, want.IdleTimeout = []string{"127.0.0.1:7002", "127.0.0.1:7003"}, 1<<20, time.Minute
	want.ApplyEnv(os.Getenv)
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("parsed\n%+v\nwant\n%+v", cfg, want)
	}
}
