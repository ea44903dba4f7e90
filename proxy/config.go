package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// Config is every setting of a proxy. Zero values are replaced by DefaultConfig's.
type Config struct {
	Listen              string         `yaml:"listen"`
	Admin               string         `yaml:"admin"`
	Master              string         `yaml:"master"`
	Slaves              []string       `yaml:"slaves"`
	SyncChannel         string         `yaml:"sync-channel"`
	BackendTimeout      time.Duration  `yaml:"backend-timeout"`
	BackendConns        int            `yaml:"backend-conns"`
	BacklogLen          int            `yaml:"backlog-len"`
	ApplierQueue        int            `yaml:"applier-queue"`
	MaxPipeline         int            `yaml:"max-pipeline"`
	WriteGroup          int            `yaml:"write-group"`
	ConfigSet           string         `yaml:"config-set"`
	OnMasterReset       string         `yaml:"on-master-reset"`
	AllowSlaveEviction  bool           `yaml:"allow-slave-eviction"`
	ReadPolicy          string         `yaml:"read-policy"`
	ReadYourWrites      bool           `yaml:"read-your-writes"`
	ReadConsistency     string         `yaml:"read-consistency"`
	RYWWait             time.Duration  `yaml:"ryw-wait"`
	MaxLagMessages      int64          `yaml:"max-lag-messages"`
	MaxLagMs            int64          `yaml:"max-lag-ms"`
	Weights             map[string]int `yaml:"weights"`
	HealthInterval      time.Duration  `yaml:"health-interval"`
	RequirePass         string         `yaml:"requirepass"`
	Users               []User         `yaml:"users"`
	MaxClients          int            `yaml:"max-clients"`
	IdleTimeout         time.Duration  `yaml:"idle-timeout"`
	HealthFailures      int            `yaml:"health-failures"`
	ProtoMaxBulkLen     ByteSize       `yaml:"proto-max-bulk-len"`
	MaxArgs             int64          `yaml:"max-args"`
	QueryBufferLimit    ByteSize       `yaml:"client-query-buffer-limit"`
	OutputTimeout       time.Duration  `yaml:"client-output-timeout"`
	TLSHandshakeTimeout time.Duration  `yaml:"tls-handshake-timeout"`
	BackendDialTimeout  time.Duration  `yaml:"backend-dial-timeout"`
	BackendWriteTimeout time.Duration  `yaml:"backend-write-timeout"`
	WriteReplyTimeout   time.Duration  `yaml:"write-reply-timeout"`
	ShutdownGrace       time.Duration  `yaml:"shutdown-grace"`
	LogLevel            string         `yaml:"log-level"`
	LogFormat           string         `yaml:"log-format"`

	// Client side TLS: with a certificate and key, clients must speak TLS; with a
	// CA too, they must present a certificate it signed.
	TLSCert string `yaml:"tls-cert"`
	TLSKey  string `yaml:"tls-key"`
	TLSCA   string `yaml:"tls-ca"`
	// Backend TLS: every connection to the master and the slaves uses TLS,
	// verified against BackendTLSCA (the system roots when empty) for the name
	// BackendTLSServerName (the host of each address when empty).
	BackendTLS           bool   `yaml:"backend-tls"`
	BackendTLSCA         string `yaml:"backend-tls-ca"`
	BackendTLSServerName string `yaml:"backend-tls-server-name"`
	BackendTLSCert       string `yaml:"backend-tls-cert"`
	BackendTLSKey        string `yaml:"backend-tls-key"`
	// Backend credentials (AUTH [user] password); the slave ones apply to every
	// slave. Never logged.
	MasterUser     string `yaml:"master-user"`
	MasterPassword string `yaml:"master-password"`
	SlaveUser      string `yaml:"slave-user"`
	SlavePassword  string `yaml:"slave-password"`
	// Sentinel, instead of Master: the sentinels (HOST:PORT) that monitor the
	// master under the name SentinelMaster. The proxy asks them for the master's
	// address at start and follows their failovers. Credentials, if the sentinels
	// require them, are never logged.
	Sentinels        []string `yaml:"sentinel"`
	SentinelMaster   string   `yaml:"sentinel-master"`
	SentinelUser     string   `yaml:"sentinel-user"`
	SentinelPassword string   `yaml:"sentinel-password"`
}

// User is a named client account (AUTH name password), besides the default user
// whose password is RequirePass.
type User struct {
	Name     string `yaml:"name"`
	Password string `yaml:"password"`
	Access   string `yaml:"access"` // read-write, or read-only: no writes, scripts, publishing or admin
}

// Access levels of users.
const (
	AccessReadWrite = "read-write"
	AccessReadOnly  = "read-only"
)

// DefaultConfig returns the defaults of every setting.
func DefaultConfig() Config {
	return Config{
		Listen:              "127.0.0.1:7379",
		SyncChannel:         "syncproxy:sync",
		BackendTimeout:      5 * time.Second,
		BackendConns:        1,
		BacklogLen:          100000,
		ApplierQueue:        10000,
		MaxPipeline:         1024,
		WriteGroup:          512,
		ConfigSet:           "deny",
		OnMasterReset:       replicate.OnMasterResetResync,
		ReadPolicy:          "prefer-replica",
		ReadYourWrites:      true,
		ReadConsistency:     "session",
		HealthInterval:      time.Second,
		HealthFailures:      3,
		MaxClients:          10000,
		ProtoMaxBulkLen:     512 << 20,
		MaxArgs:             1024 * 1024,
		QueryBufferLimit:    1 << 30,
		OutputTimeout:       60 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		WriteReplyTimeout:   60 * time.Second,
		ShutdownGrace:       10 * time.Second,
		LogLevel:            "info",
		LogFormat:           "auto",
	}
}

// maxConfigFile bounds the size of a config file.
const maxConfigFile = 1 << 20

// LoadConfigFile reads a YAML config file over c; unknown keys are errors.
func LoadConfigFile(path string, c *Config) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	// A config file is small; a huge one (or a device) is refused, not parsed.
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if len(data) > maxConfigFile {
		return fmt.Errorf("config %s: larger than %d bytes", path, maxConfigFile)
	}
	return DecodeConfig(bytes.NewReader(data), c, path)
}

// DecodeConfig decodes YAML from r over c.
func DecodeConfig(r io.Reader, c *Config, name string) error {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file
		}
		return fmt.Errorf("config %s: %s", name, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return nil
}

// DialTimeout is the timeout of backend dials and handshakes.
func (c *Config) DialTimeout() time.Duration {
	if c.BackendDialTimeout > 0 {
		return c.BackendDialTimeout
	}
	return c.BackendTimeout
}

// WriteTimeout is the timeout of backend writes.
func (c *Config) WriteTimeout() time.Duration {
	if c.BackendWriteTimeout > 0 {
		return c.BackendWriteTimeout
	}
	return c.BackendTimeout
}

// Demo reports whether c asks for the self-contained demo (no master configured).
func (c *Config) Demo() bool { return c.Master == "" && len(c.Sentinels) == 0 }

// Validate checks every setting and returns the first problem, worded for a user.
func (c *Config) Validate() error {
	if err := checkAddr("listen", c.Listen); err != nil {
		return err
	}
	if c.Admin != "" {
		if err := checkAddr("listen", c.Admin); err != nil {
			return fmt.Errorf("config: admin: %q is not HOST:PORT", c.Admin)
		}
	}
	if c.Master != "" {
		if err := checkAddr("master", c.Master); err != nil {
			return err
		}
	} else if len(c.Slaves) > 0 && len(c.Sentinels) == 0 {
		return errors.New("config: slaves given without a master (or sentinel)")
	}
	if err := c.validateSentinel(); err != nil {
		return err
	}
	if err := checkAddrList("slaves", c.Slaves, c.Master, "listed twice or is the master"); err != nil {
		return err
	}
	switch {
	case c.SyncChannel == "":
		return errors.New("config: sync-channel must not be empty")
	case c.BackendTimeout < time.Millisecond:
		return fmt.Errorf("config: backend-timeout %v is too short (at least 1ms)", c.BackendTimeout)
	case c.BackendConns < 1 || c.BackendConns > 64:
		return fmt.Errorf("config: backend-conns %d out of range 1..64", c.BackendConns)
	case c.BacklogLen < 100:
		return fmt.Errorf("config: backlog-len %d too small (at least 100)", c.BacklogLen)
	case c.ApplierQueue < 1:
		return fmt.Errorf("config: applier-queue %d must be at least 1", c.ApplierQueue)
	case c.MaxPipeline < 1:
		return fmt.Errorf("config: max-pipeline %d must be at least 1", c.MaxPipeline)
	case c.WriteGroup < 1 || c.WriteGroup > 4096:
		return fmt.Errorf("config: write-group %d out of range 1..4096", c.WriteGroup)
	case c.ShutdownGrace < 0:
		return fmt.Errorf("config: shutdown-grace %v must not be negative", c.ShutdownGrace)
	}
	if _, err := router.ParseReadPolicy(c.ReadPolicy); err != nil {
		return fmt.Errorf("config: %s", strings.TrimPrefix(err.Error(), "router: "))
	}
	if _, ok := parseConsistency(c.ReadConsistency); !ok {
		return fmt.Errorf("config: read-consistency %q: want session, global or eventual", c.ReadConsistency)
	}
	switch {
	case c.HealthInterval < 10*time.Millisecond:
		return fmt.Errorf("config: health-interval %v too short (at least 10ms)", c.HealthInterval)
	case c.MaxClients < 1:
		return fmt.Errorf("config: max-clients %d must be at least 1", c.MaxClients)
	case c.IdleTimeout < 0:
		return fmt.Errorf("config: idle-timeout %v must not be negative", c.IdleTimeout)
	case c.ProtoMaxBulkLen < 1024:
		return fmt.Errorf("config: proto-max-bulk-len %d too small (at least 1kb)", c.ProtoMaxBulkLen)
	case c.MaxArgs < 16:
		return fmt.Errorf("config: max-args %d too small (at least 16)", c.MaxArgs)
	case c.QueryBufferLimit < 1024:
		return fmt.Errorf("config: client-query-buffer-limit %d too small (at least 1kb)", c.QueryBufferLimit)
	case c.TLSHandshakeTimeout < time.Millisecond:
		return fmt.Errorf("config: tls-handshake-timeout %v too short (at least 1ms)", c.TLSHandshakeTimeout)
	case c.OutputTimeout < 0:
		return fmt.Errorf("config: client-output-timeout %v must not be negative", c.OutputTimeout)
	case c.BackendDialTimeout < 0 || c.BackendWriteTimeout < 0:
		return errors.New("config: backend-dial-timeout and backend-write-timeout must not be negative (0: backend-timeout)")
	case c.WriteReplyTimeout < time.Millisecond:
		return fmt.Errorf("config: write-reply-timeout %v is too short (at least 1ms)", c.WriteReplyTimeout)
	case c.HealthFailures < 1:
		return fmt.Errorf("config: health-failures %d must be at least 1", c.HealthFailures)
	case c.RYWWait < 0:
		return fmt.Errorf("config: ryw-wait %v must not be negative", c.RYWWait)
	case c.MaxLagMessages < 0 || c.MaxLagMs < 0:
		return errors.New("config: max-lag-messages and max-lag-ms must not be negative")
	}
	for addr, w := range c.Weights {
		found := false
		for _, s := range c.Slaves {
			found = found || s == addr
		}
		if !found || w < 1 || w > 1000 {
			return fmt.Errorf("config: weights: %q must be a slave's address with a weight in 1..1000", addr)
		}
	}
	users := map[string]bool{}
	for i, u := range c.Users {
		switch {
		case u.Name == "" || strings.ContainsAny(u.Name, " \t\r\n"):
			return fmt.Errorf("config: users[%d]: a name without spaces is needed", i)
		case u.Name == "default":
			return fmt.Errorf("config: users[%d]: \"default\" is the user of requirepass", i)
		case users[u.Name]:
			return fmt.Errorf("config: users: %q is listed twice", u.Name)
		case u.Password == "":
			return fmt.Errorf("config: users: %q has no password", u.Name)
		case u.Access != AccessReadWrite && u.Access != AccessReadOnly:
			return fmt.Errorf("config: users: %q: access must be read-write or read-only", u.Name)
		}
		users[u.Name] = true
	}
	switch c.ConfigSet {
	case "deny", "broadcast":
	default:
		return fmt.Errorf("config: config-set %q: want deny or broadcast", c.ConfigSet)
	}
	switch c.OnMasterReset {
	case replicate.OnMasterResetResync, replicate.OnMasterResetHold:
	default:
		return fmt.Errorf("config: on-master-reset %q: want resync or hold", c.OnMasterReset)
	}
	switch c.LogLevel {
	case "trace", "debug", "info", "warn", "error", "fatal", "panic", "disabled":
	default:
		return fmt.Errorf("config: log-level %q: want trace, debug, info, warn, error or disabled", c.LogLevel)
	}
	switch c.LogFormat {
	case "auto", "json", "console":
	default:
		return fmt.Errorf("config: log-format %q: want json, console or auto", c.LogFormat)
	}
	switch {
	case c.MasterUser != "" && c.MasterPassword == "":
		return errors.New("config: master-user needs master-password")
	case c.SlaveUser != "" && c.SlavePassword == "":
		return errors.New("config: slave-user needs slave-password")
	}
	if _, err := c.ServerTLS(); err != nil {
		return err
	}
	if _, err := c.BackendTLSConfig(); err != nil {
		return err
	}
	return nil
}

// validateSentinel checks the Sentinel settings: the master comes either from
// master or from sentinel, and sentinel needs the master's name.
func (c *Config) validateSentinel() error {
	switch {
	case c.Master != "" && len(c.Sentinels) > 0:
		return errors.New("config: master and sentinel exclude each other: give the master's address, or the sentinels that know it")
	case len(c.Sentinels) > 0 && c.SentinelMaster == "":
		return errors.New("config: sentinel needs sentinel-master, the name the sentinels monitor the master under")
	case c.SentinelMaster != "" && len(c.Sentinels) == 0:
		return errors.New("config: sentinel-master needs sentinel (the sentinels' addresses)")
	case c.SentinelUser != "" && c.SentinelPassword == "":
		return errors.New("config: sentinel-user needs sentinel-password")
	case strings.ContainsAny(c.SentinelMaster, " \t\r\n"):
		return fmt.Errorf("config: sentinel-master %q: a name without spaces is needed", c.SentinelMaster)
	}
	return checkAddrList("sentinel", c.Sentinels, "", "listed twice")
}

// checkAddrList checks each address of list, and that none is repeated or is
// other (when given); dup words the error for a repeat.
func checkAddrList(name string, list []string, other, dup string) error {
	seen := map[string]bool{}
	if other != "" {
		seen[other] = true
	}
	for _, a := range list {
		if err := checkAddr(name, a); err != nil {
			return err
		}
		if seen[a] {
			return fmt.Errorf("config: %s: %q is %s", name, a, dup)
		}
		seen[a] = true
	}
	return nil
}

func checkAddr(name, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("config: %s: %q is not HOST:PORT", name, addr)
	}
	if p, err := parsePort(port); err != nil || p == 0 && name != "listen" {
		return fmt.Errorf("config: %s: %q has a bad port", name, addr)
	}
	return nil
}

func parsePort(s string) (int, error) {
	n := 0
	if s == "" || len(s) > 5 {
		return 0, errors.New("bad port")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, errors.New("bad port")
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, errors.New("bad port")
	}
	return n, nil
}

// ByteSize is a number of bytes, written as Redis writes them in its config: a
// plain number, or with a unit k, kb, m, mb, g, gb (k = 1000, kb = 1024).
type ByteSize int64

// ParseByteSize parses s as Redis' memtoll does.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	units := []struct {
		suffix string
		mul    int64
	}{{"gb", 1 << 30}, {"mb", 1 << 20}, {"kb", 1 << 10}, {"g", 1e9}, {"m", 1e6}, {"k", 1e3}, {"b", 1}}
	mul := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mul = strings.TrimSuffix(t, u.suffix), u.mul
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mul {
		return 0, fmt.Errorf("%q is not a size (a number of bytes, or with k, kb, m, mb, g, gb)", s)
	}
	return ByteSize(n * mul), nil
}

// String writes the size in the largest exact binary unit.
func (b ByteSize) String() string {
	switch n := int64(b); {
	case n != 0 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "gb"
	case n != 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "mb"
	case n != 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "kb"
	default:
		return strconv.FormatInt(n, 10)
	}
}

// Set implements flag.Value.
func (b *ByteSize) Set(s string) error {
	v, err := ParseByteSize(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// UnmarshalYAML takes a number or a string with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a size must be a number or a string like 512mb", n.Line)
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*b = v
	return nil
}
