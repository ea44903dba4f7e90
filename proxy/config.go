package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/syncproxy/syncproxy/router"
)

// Config is every setting of a proxy. Zero values are replaced by DefaultConfig's.
type Config struct {
	Listen         string         `yaml:"listen"`
	Master         string         `yaml:"master"`
	Slaves         []string       `yaml:"slaves"`
	SyncChannel    string         `yaml:"sync-channel"`
	BackendTimeout time.Duration  `yaml:"backend-timeout"`
	BackendConns   int            `yaml:"backend-conns"`
	BacklogLen     int            `yaml:"backlog-len"`
	ApplierQueue   int            `yaml:"applier-queue"`
	MaxPipeline    int            `yaml:"max-pipeline"`
	WriteGroup     int            `yaml:"write-group"`
	ConfigSet      string         `yaml:"config-set"`
	ReadPolicy     string         `yaml:"read-policy"`
	ReadYourWrites bool           `yaml:"read-your-writes"`
	RYWWait        time.Duration  `yaml:"ryw-wait"`
	MaxLagMessages int64          `yaml:"max-lag-messages"`
	MaxLagMs       int64          `yaml:"max-lag-ms"`
	Weights        map[string]int `yaml:"weights"`
	HealthInterval time.Duration  `yaml:"health-interval"`
	RequirePass    string         `yaml:"requirepass"`
	MaxClients     int            `yaml:"max-clients"`
	IdleTimeout    time.Duration  `yaml:"idle-timeout"`
	HealthFailures int            `yaml:"health-failures"`
	ShutdownGrace  time.Duration  `yaml:"shutdown-grace"`
	LogLevel       string         `yaml:"log-level"`
	LogFormat      string         `yaml:"log-format"`

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
}

// DefaultConfig returns the defaults of every setting.
func DefaultConfig() Config {
	return Config{
		Listen:         "127.0.0.1:7379",
		SyncChannel:    "syncproxy:sync",
		BackendTimeout: 5 * time.Second,
		BackendConns:   1,
		BacklogLen:     100000,
		ApplierQueue:   10000,
		MaxPipeline:    1024,
		WriteGroup:     512,
		ConfigSet:      "deny",
		ReadPolicy:     "prefer-replica",
		ReadYourWrites: true,
		HealthInterval: time.Second,
		HealthFailures: 3,
		MaxClients:     10000,
		ShutdownGrace:  10 * time.Second,
		LogLevel:       "info",
		LogFormat:      "auto",
	}
}

// LoadConfigFile reads a YAML config file over c; unknown keys are errors.
func LoadConfigFile(path string, c *Config) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	return DecodeConfig(f, c, path)
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

// Demo reports whether c asks for the self-contained demo (no master configured).
func (c *Config) Demo() bool { return c.Master == "" }

// Validate checks every setting and returns the first problem, worded for a user.
func (c *Config) Validate() error {
	if err := checkAddr("listen", c.Listen); err != nil {
		return err
	}
	if c.Master != "" {
		if err := checkAddr("master", c.Master); err != nil {
			return err
		}
	} else if len(c.Slaves) > 0 {
		return errors.New("config: slaves given without a master")
	}
	seen := map[string]bool{c.Master: true}
	for _, s := range c.Slaves {
		if err := checkAddr("slaves", s); err != nil {
			return err
		}
		if seen[s] {
			return fmt.Errorf("config: slaves: %q is listed twice or is the master", s)
		}
		seen[s] = true
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
	switch {
	case c.HealthInterval < 10*time.Millisecond:
		return fmt.Errorf("config: health-interval %v too short (at least 10ms)", c.HealthInterval)
	case c.MaxClients < 1:
		return fmt.Errorf("config: max-clients %d must be at least 1", c.MaxClients)
	case c.IdleTimeout < 0:
		return fmt.Errorf("config: idle-timeout %v must not be negative", c.IdleTimeout)
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
	switch c.ConfigSet {
	case "deny", "broadcast":
	default:
		return fmt.Errorf("config: config-set %q: want deny or broadcast", c.ConfigSet)
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
