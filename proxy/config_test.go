package proxy

import (
	"crypto/tls"
	"flag"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.Master = "127.0.0.1:6379"
	good.Slaves = []string{"127.0.0.1:6380"}
	if err := good.Validate(); err != nil {
		t.Fatalf("default config with a master: %v", err)
	}
	demo := DefaultConfig()
	if err := demo.Validate(); err != nil || !demo.Demo() {
		t.Fatalf("demo config: %v, demo %v", err, demo.Demo())
	}
	bad := map[string]func(*Config){
		"listen":           func(c *Config) { c.Listen = "nope" },
		"master":           func(c *Config) { c.Master = "host:99999" },
		"slaves":           func(c *Config) { c.Slaves = []string{c.Master} },
		"backend-timeout":  func(c *Config) { c.BackendTimeout = 0 },
		"write-reply":      func(c *Config) { c.WriteReplyTimeout = 0 },
		"backend-conns":    func(c *Config) { c.BackendConns = 0 },
		"backlog-len":      func(c *Config) { c.BacklogLen = 5 },
		"write-group":      func(c *Config) { c.WriteGroup = 0 },
		"config-set":       func(c *Config) { c.ConfigSet = "maybe" },
		"on-master-reset":  func(c *Config) { c.OnMasterReset = "wipe" },
		"read policy":      func(c *Config) { c.ReadPolicy = "nearest" },
		"read consistency": func(c *Config) { c.ReadConsistency = "strong" },
		"max-lag":          func(c *Config) { c.MaxLagMs = -1 },
		"weights":          func(c *Config) { c.Weights = map[string]int{"10.0.0.9:1": 2} },
		"health-interval":  func(c *Config) { c.HealthInterval = time.Millisecond },
		"log-level":        func(c *Config) { c.LogLevel = "loud" },
		"log-format":       func(c *Config) { c.LogFormat = "xml" },
		"slaves no master": func(c *Config) { c.Master = "" },
		"threads":          func(c *Config) { c.Threads = -1 },
	}
	for name, mutate := range bad {
		c := good
		c.Slaves = append([]string(nil), good.Slaves...)
		mutate(&c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), "config: ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: Validate() = %v, want one line starting with config:", name, err)
		}
	}
}

func TestDecodeConfig(t *testing.T) {
	c := DefaultConfig()
	yml := "listen: 127.0.0.1:1\nmaster: 127.0.0.1:2\nslaves: [127.0.0.1:3]\nbackend-timeout: 250ms\nweights: {127.0.0.1:3: 4}\nwrite-reply-timeout: 90s\n"
	if err := DecodeConfig(strings.NewReader(yml), &c, "test"); err != nil {
		t.Fatal(err)
	}
	if c.BackendTimeout != 250*time.Millisecond || c.Weights["127.0.0.1:3"] != 4 || c.Master != "127.0.0.1:2" ||
		c.WriteReplyTimeout != 90*time.Second {
		t.Fatalf("decoded %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{"nosuchkey: 1\n", "backend-timeout: soon\n", "slaves: 3\n", "[", "listen: [\n"} {
		c := DefaultConfig()
		err := DecodeConfig(strings.NewReader(in), &c, "test")
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v, want a one-line error", in, err)
		}
	}
	if err := DecodeConfig(strings.NewReader(""), &c, "empty"); err != nil {
		t.Errorf("an empty file: %v", err)
	}
}

// FuzzDecodeConfig: config loading never panics, and what it accepts validates or
// fails with a one-line error.
func FuzzDecodeConfig(f *testing.F) {
	f.Add("listen: 127.0.0.1:1\nmaster: 127.0.0.1:2\n")
	f.Add("slaves: [a:1, b:2]\nweights: {a:1: 3}\n")
	f.Add("backend-timeout: 1s\nread-policy: any\n")
	f.Fuzz(func(t *testing.T, in string) {
		c := DefaultConfig()
		if err := DecodeConfig(strings.NewReader(in), &c, "fuzz"); err != nil {
			return
		}
		if err := c.Validate(); err != nil && strings.Contains(err.Error(), "\n") {
			t.Fatalf("multi-line error: %q", err)
		}
	})
}

func TestConfigUsersAndSizes(t *testing.T) {
	c := DefaultConfig()
	c.Master = "127.0.0.1:6379"
	y := "users:\n  - {name: app, password: p1, access: read-write}\n  - {name: ro, password: p2, access: read-only}\n" +
		"proto-max-bulk-len: 1mb\nclient-query-buffer-limit: 2097152\nmax-args: 100\nclient-output-timeout: 5s\n"
	if err := DecodeConfig(strings.NewReader(y), &c, "t"); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Users) != 2 || c.Users[1].Access != AccessReadOnly || c.ProtoMaxBulkLen != 1<<20 || c.QueryBufferLimit != 2<<20 || c.MaxArgs != 100 {
		t.Fatalf("decoded %+v", c)
	}
	for _, bad := range []string{
		"users: [{name: default, password: x, access: read-only}]",
		"users: [{name: a, password: x, access: admin}]",
		"users: [{name: a, access: read-only}]",
		"users: [{name: a, password: x, access: read-only}, {name: a, password: y, access: read-only}]",
		"proto-max-bulk-len: 12zb",
		"proto-max-bulk-len: [1]",
	} {
		c := DefaultConfig()
		c.Master = "127.0.0.1:6379"
		err := DecodeConfig(strings.NewReader(bad), &c, "t")
		if err == nil {
			err = c.Validate()
		}
		if err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestConfigTLSAndCredentials(t *testing.T) {
	certs := redistest.NewCerts(t)
	good := DefaultConfig()
	good.Master = "127.0.0.1:6379"
	missing := filepath.Join(t.TempDir(), "missing.pem")
	bad := map[string]struct {
		mutate func(*Config)
		want   string // in the error
	}{
		"cert without key":     {func(c *Config) { c.TLSCert = certs.ServerCert }, "tls-cert and tls-key"},
		"key without cert":     {func(c *Config) { c.TLSKey = certs.ServerKey }, "tls-cert and tls-key"},
		"ca without cert":      {func(c *Config) { c.TLSCA = certs.CAFile }, "tls-ca needs"},
		"missing cert":         {func(c *Config) { c.TLSCert, c.TLSKey = missing, certs.ServerKey }, "tls-cert: open " + missing},
		"missing key":          {func(c *Config) { c.TLSCert, c.TLSKey = certs.ServerCert, missing }, "tls-key: open " + missing},
		"key of another cert":  {func(c *Config) { c.TLSCert, c.TLSKey = certs.ServerCert, certs.ClientKey }, certs.ServerCert},
		"ca not a certificate": {func(c *Config) { c.TLSCert, c.TLSKey, c.TLSCA = certs.ServerCert, certs.ServerKey, certs.ServerKey }, "no PEM certificate"},
		"ca a directory":       {func(c *Config) { c.TLSCert, c.TLSKey, c.TLSCA = certs.ServerCert, certs.ServerKey, certs.Dir }, "not a regular file"},
		"backend ca no tls":    {func(c *Config) { c.BackendTLSCA = certs.CAFile }, "backend-tls-ca given without backend-tls"},
		"backend missing ca":   {func(c *Config) { c.BackendTLS, c.BackendTLSCA = true, missing }, "backend-tls-ca: open"},
		"backend cert alone":   {func(c *Config) { c.BackendTLS, c.BackendTLSCert = true, certs.ClientCert }, "backend-tls-cert and backend-tls-key"},
		"master user alone":    {func(c *Config) { c.MasterUser = "app" }, "master-user needs master-password"},
		"slave user alone":     {func(c *Config) { c.SlaveUser = "app" }, "slave-user needs slave-password"},
	}
	for name, tc := range bad {
		c := good
		tc.mutate(&c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), "config: ") || strings.Contains(err.Error(), "\n") ||
			!strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want one line starting with config: and containing %q", name, err, tc.want)
		}
	}

	c := good
	c.TLSCert, c.TLSKey, c.TLSCA = certs.ServerCert, certs.ServerKey, certs.CAFile
	c.BackendTLS, c.BackendTLSCA = true, certs.CAFile
	c.BackendTLSCert, c.BackendTLSKey = certs.ClientCert, certs.ClientKey
	c.MasterUser, c.MasterPassword, c.SlavePassword = "app", "pw", "pw2"
	if err := c.Validate(); err != nil {
		t.Fatalf("TLS and credentials: %v", err)
	}
	st, _ := c.ServerTLS()
	if st == nil || st.ClientAuth != tls.RequireAndVerifyClientCert || st.MinVersion != tls.VersionTLS12 || len(st.Certificates) != 1 {
		t.Errorf("ServerTLS = %+v", st)
	}
	bt, _ := c.BackendTLSConfig()
	if bt == nil || bt.RootCAs == nil || len(bt.Certificates) != 1 || bt.MinVersion != tls.VersionTLS12 {
		t.Fatalf("BackendTLSConfig = %+v", bt)
	}
	if got := backendTLSFor(bt, "10.0.0.1:6379").ServerName; got != "10.0.0.1" {
		t.Errorf("ServerName for 10.0.0.1:6379 = %q", got)
	}
	c.BackendTLSServerName = "redis.internal"
	bt, _ = c.BackendTLSConfig()
	if got := backendTLSFor(bt, "10.0.0.1:6379").ServerName; got != "redis.internal" {
		t.Errorf("ServerName with backend-tls-server-name = %q", got)
	}
	if backendTLSFor(nil, "10.0.0.1:6379") != nil {
		t.Error("backendTLSFor(nil) is not nil")
	}

	yml := "tls-cert: a.pem\ntls-key: b.pem\ntls-ca: c.pem\nbackend-tls: true\nbackend-tls-ca: d.pem\n" +
		"backend-tls-server-name: r\nbackend-tls-cert: e.pem\nbackend-tls-key: f.pem\n" +
		"master-user: mu\nmaster-password: mp\nslave-user: su\nslave-password: sp\n"
	d := DefaultConfig()
	if err := DecodeConfig(strings.NewReader(yml), &d, "test"); err != nil {
		t.Fatal(err)
	}
	want := Config{TLSCert: "a.pem", TLSKey: "b.pem", TLSCA: "c.pem", BackendTLS: true, BackendTLSCA: "d.pem",
		BackendTLSServerName: "r", BackendTLSCert: "e.pem", BackendTLSKey: "f.pem",
		MasterUser: "mu", MasterPassword: "mp", SlaveUser: "su", SlavePassword: "sp"}
	got := Config{TLSCert: d.TLSCert, TLSKey: d.TLSKey, TLSCA: d.TLSCA, BackendTLS: d.BackendTLS, BackendTLSCA: d.BackendTLSCA,
		BackendTLSServerName: d.BackendTLSServerName, BackendTLSCert: d.BackendTLSCert, BackendTLSKey: d.BackendTLSKey,
		MasterUser: d.MasterUser, MasterPassword: d.MasterPassword, SlaveUser: d.SlaveUser, SlavePassword: d.SlavePassword}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %+v, want %+v", got, want)
	}
}

// TestConfigSentinel: the master comes from master or from sentinel, never both;
// sentinel needs sentinel-master; the YAML keys decode.
func TestConfigSentinel(t *testing.T) {
	c := DefaultConfig()
	yml := "sentinel: [127.0.0.1:26379, 127.0.0.1:26380]\nsentinel-master: mymaster\nsentinel-user: u\nsentinel-password: p\nslaves: [127.0.0.1:3]\n"
	if err := DecodeConfig(strings.NewReader(yml), &c, "test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("sentinel config: %v", err)
	}
	if len(c.Sentinels) != 2 || c.SentinelMaster != "mymaster" || c.SentinelUser != "u" || c.SentinelPassword != "p" || c.Demo() {
		t.Fatalf("decoded %+v", c)
	}
	bad := map[string]func(*Config){
		"both":             func(c *Config) { c.Master = "127.0.0.1:6379" },
		"no name":          func(c *Config) { c.SentinelMaster = "" },
		"name only":        func(c *Config) { c.Sentinels = nil },
		"bad address":      func(c *Config) { c.Sentinels = []string{"127.0.0.1"} },
		"twice":            func(c *Config) { c.Sentinels = []string{"127.0.0.1:1", "127.0.0.1:1"} },
		"user no password": func(c *Config) { c.SentinelPassword = "" },
		"name with spaces": func(c *Config) { c.SentinelMaster = "my master" },
	}
	for name, mutate := range bad {
		b := c
		mutate(&b)
		err := b.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), "config: ") {
			t.Errorf("%s: Validate() = %v, want an error starting with config:", name, err)
		}
	}
}

// FuzzParseByteSize: sizes parse as Redis' memtoll, and what String writes parses
// back to the same size.
func FuzzParseByteSize(f *testing.F) {
	for _, s := range []string{"512mb", "1gb", "1k", "2KB", "100", "0", "-1", "9223372036854775807", "8589934592gb", "1.5mb", " 7b "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseByteSize(s)
		if err != nil {
			return
		}
		if v < 0 {
			t.Fatalf("%q parsed to a negative size %d", s, v)
		}
		back, err := ParseByteSize(v.String())
		if err != nil || back != v {
			t.Fatalf("%q -> %d -> %q -> %d, %v", s, v, v.String(), back, err)
		}
	})
}

// TestBindFlags: every setting but the file-only ones has a flag named as its
// config-file key, that writes into that setting's field and no other.
func TestBindFlags(t *testing.T) {
	var cfg Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	cfg.BindFlags(fs)
	typ := reflect.TypeOf(cfg)
	var fileOnly []string
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		name := SettingName(f)
		if f.Tag.Get("flag") == "-" {
			fileOnly = append(fileOnly, name)
			if fs.Lookup(name) != nil {
				t.Errorf("%s: a flag, although tagged file-only", name)
			}
			continue
		}
		if f.Tag.Get("usage") == "" {
			t.Errorf("Config.%s: no usage tag", f.Name)
		}
		fl := fs.Lookup(name)
		if fl == nil {
			t.Errorf("Config.%s: no flag %q", f.Name, name)
			continue
		}
		before := cfg
		value := map[reflect.Kind]string{reflect.String: "x:1", reflect.Bool: "true", reflect.Slice: "a:1, b:2"}[f.Type.Kind()]
		if value == "" {
			value = "7"
		}
		if f.Type == reflect.TypeOf(time.Duration(0)) {
			value = "7s"
		}
		if err := fs.Set(name, value); err != nil {
			t.Errorf("--%s %s: %v", name, value, err)
			continue
		}
		after := reflect.ValueOf(cfg)
		for j := 0; j < typ.NumField(); j++ {
			changed := !reflect.DeepEqual(reflect.ValueOf(before).Field(j).Interface(), after.Field(j).Interface())
			if changed != (j == i) {
				t.Errorf("--%s %s: Config.%s changed %v", name, value, typ.Field(j).Name, changed)
			}
		}
	}
	if strings.Join(fileOnly, ",") != "weights,users" {
		t.Errorf("file-only settings %v, want weights and users", fileOnly)
	}
	if got := strings.Join(cfg.Slaves, "|"); got != "a:1|b:2" {
		t.Errorf("--slaves: %q", got)
	}
}

// TestApplyEnv: the settings naming a variable take its value when empty only.
func TestApplyEnv(t *testing.T) {
	cfg := Config{MasterPassword: "given"}
	cfg.ApplyEnv(func(name string) string { return "env:" + name })
	if cfg.MasterPassword != "given" || cfg.SlavePassword != "env:SYNCPROXY_SLAVE_PASSWORD" ||
		cfg.SentinelPassword != "env:SYNCPROXY_SENTINEL_PASSWORD" || cfg.RequirePass != "" || cfg.MasterUser != "" {
		t.Errorf("%+v", cfg)
	}
}
