package proxy

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// Config is every setting of a proxy. Each is declared once, here, by its
// field's tags: yaml is its key in the config file and the name of its flag;
// usage is the flag's help (a field with flag:"-" is set in the file only);
// reload:"true" lets Reload change it while serving (any other setting needs a
// restart); env names a variable that gives it when neither the file nor a
// flag does (ApplyEnv). DefaultConfig holds the defaults.
type Config struct {
	Listen              string         `yaml:"listen" usage:"address to accept Redis clients on"`
	Admin               string         `yaml:"admin" usage:"HOST:PORT of the admin HTTP listener: /metrics, /healthz, /status.json, / (off when empty)"`
	Master              string         `yaml:"master" usage:"master Redis HOST:PORT (writes); empty (and no --sentinel) runs the in-process demo"`
	Slaves              []string       `yaml:"slaves" reload:"true" usage:"comma-separated slave Redis HOST:PORT list (reads)"`
	SyncChannel         string         `yaml:"sync-channel" usage:"pub/sub channel of the sync messages"`
	BackendTimeout      time.Duration  `yaml:"backend-timeout" usage:"timeout of a slave's reply (the master's: --write-reply-timeout), and of dials and writes unless set on their own)"`
	BackendConns        int            `yaml:"backend-conns" usage:"multiplexed connections per backend"`
	BacklogLen          int            `yaml:"backlog-len" usage:"sync messages kept in the master's backlog (approximate)"`
	ApplierQueue        int            `yaml:"applier-queue" usage:"sync messages buffered in memory per slave"`
	MaxPipeline         int            `yaml:"max-pipeline" reload:"true" usage:"pipelined commands dispatched at once per client"`
	WriteGroup          int            `yaml:"write-group" usage:"writes per replication script call at most (group commit; 1 disables it)"`
	ConfigSet           string         `yaml:"config-set" usage:"CONFIG SET from clients: deny, or broadcast to the master and every slave"`
	OnMasterReset       string         `yaml:"on-master-reset" usage:"when the master lost the slaves' data: resync (empty the slaves to match), or hold (keep them, refuse writes until SYNCPROXY MASTER-RESET CONFIRM)"`
	AllowSlaveEviction  bool           `yaml:"allow-slave-eviction" usage:"start even when a slave's maxmemory is below the master's (it leaves the read set while it evicts)"`
	ReadPolicy          string         `yaml:"read-policy" reload:"true" usage:"where reads go: master, prefer-master, slave, prefer-slave, any"`
	ReadYourWrites      bool           `yaml:"read-your-writes" reload:"true" usage:"false: the same as --read-consistency eventual (kept for older configurations)"`
	ReadConsistency     string         `yaml:"read-consistency" reload:"true" usage:"read consistency level: session (own writes, monotonic reads, tokens), global (every write acknowledged before the read), eventual"`
	RYWWait             time.Duration  `yaml:"ryw-wait" reload:"true" usage:"how long a read may wait for a slave to apply the client's last write before going to the master"`
	TrackingMaxKeys     int            `yaml:"tracking-table-max-keys" usage:"keys CLIENT TRACKING remembers at most (as Redis'); beyond, keys are evicted with their invalidation (0: no bound)"`
	MaxLagMessages      int64          `yaml:"max-lag-messages" reload:"true" usage:"a slave more messages behind serves no reads (0: no bound)"`
	MaxLagMs            int64          `yaml:"max-lag-ms" reload:"true" usage:"a slave lagging more milliseconds serves no reads (0: no bound)"`
	Weights             map[string]int `yaml:"weights" reload:"true" flag:"-"`
	HealthInterval      time.Duration  `yaml:"health-interval" reload:"true" usage:"how often each slave is checked (PING) and its position compared with the master's"`
	RequirePass         string         `yaml:"requirepass" reload:"true" usage:"password clients must give with AUTH (as Redis' requirepass); empty: none"`
	Users               []User         `yaml:"users" reload:"true" flag:"-"`
	MaxClients          int            `yaml:"max-clients" reload:"true" usage:"clients connected at once at most; beyond, Redis' error and the connection closed"`
	IdleTimeout         time.Duration  `yaml:"idle-timeout" reload:"true" usage:"close a client idle this long (0: never; subscribed clients excepted)"`
	HealthFailures      int            `yaml:"health-failures" reload:"true" usage:"consecutive failed checks that take a slave out of the read set"`
	ProtoMaxBulkLen     ByteSize       `yaml:"proto-max-bulk-len" reload:"true" usage:"longest bulk string a client may send (e.g. 512mb)"`
	MaxArgs             int64          `yaml:"max-args" reload:"true" usage:"arguments in one command at most"`
	QueryBufferLimit    ByteSize       `yaml:"client-query-buffer-limit" reload:"true" usage:"bytes of one client command at most (e.g. 1gb)"`
	OutputTimeout       time.Duration  `yaml:"client-output-timeout" reload:"true" usage:"close a client that accepts no reply byte for this long (0: never)"`
	TLSHandshakeTimeout time.Duration  `yaml:"tls-handshake-timeout" reload:"true" usage:"close a TLS client that has not completed its handshake after this long"`
	BackendDialTimeout  time.Duration  `yaml:"backend-dial-timeout" usage:"timeout of backend dials and handshakes (0: --backend-timeout)"`
	BackendWriteTimeout time.Duration  `yaml:"backend-write-timeout" usage:"timeout of backend writes (0: --backend-timeout)"`
	WriteReplyTimeout   time.Duration  `yaml:"write-reply-timeout" usage:"how long to wait for the master's reply to a write while its connection is alive; beyond, the write's outcome is unknown"`
	ShutdownGrace       time.Duration  `yaml:"shutdown-grace" reload:"true" usage:"time to finish requests in flight on SIGINT/SIGTERM"`
	LogLevel            string         `yaml:"log-level" reload:"true" usage:"log level: trace, debug, info, warn, error, disabled"`
	LogFormat           string         `yaml:"log-format" reload:"true" usage:"log format: json, console, or auto (console on a terminal)"`
	NearCache           ByteSize       `yaml:"near-cache" usage:"memory of the near cache: values of keys read with GET, served from the proxy while the sync stream says they are current (e.g. 64mb; 0: off)"`
	NearCacheMaxValue   ByteSize       `yaml:"near-cache-max-value" usage:"largest GET reply the near cache keeps (e.g. 64kb)"`
	Threads             int            `yaml:"threads" usage:"CPUs the proxy runs Go code on at once (GOMAXPROCS); 0: every CPU it may use. 1 on a small machine shared with Redis or the clients"`

	// Client side TLS: with a certificate and key, clients must speak TLS; with a
	// CA too, they must present a certificate it signed.
	TLSCert string `yaml:"tls-cert" usage:"certificate (PEM) of the client listener; with --tls-key, clients must use TLS"`
	TLSKey  string `yaml:"tls-key" usage:"private key (PEM) of --tls-cert"`
	TLSCA   string `yaml:"tls-ca" usage:"CA certificates (PEM): clients must present a certificate signed by one"`
	// Backend TLS: every connection to the master and the slaves uses TLS,
	// verified against BackendTLSCA (the system roots when empty) for the name
	// BackendTLSServerName (the host of each address when empty).
	BackendTLS           bool   `yaml:"backend-tls" usage:"connect to the master and the slaves with TLS"`
	BackendTLSCA         string `yaml:"backend-tls-ca" usage:"CA certificates (PEM) that verify the backends (default: the system's)"`
	BackendTLSServerName string `yaml:"backend-tls-server-name" usage:"name the backends' certificates are verified for, sent as SNI (default: the host of each address)"`
	BackendTLSCert       string `yaml:"backend-tls-cert" usage:"client certificate (PEM) presented to the backends"`
	BackendTLSKey        string `yaml:"backend-tls-key" usage:"private key (PEM) of --backend-tls-cert"`
	// Backend credentials (AUTH [user] password); the slave ones apply to every
	// slave. Never logged.
	MasterUser     string `yaml:"master-user" usage:"ACL user on the master (needs a password)"`
	MasterPassword string `yaml:"master-password" env:"SYNCPROXY_MASTER_PASSWORD" usage:"password on the master (AUTH)"`
	SlaveUser      string `yaml:"slave-user" usage:"ACL user on every slave (needs a password)"`
	SlavePassword  string `yaml:"slave-password" env:"SYNCPROXY_SLAVE_PASSWORD" usage:"password on every slave (AUTH)"`
	// Sentinel, instead of Master: the sentinels (HOST:PORT) that monitor the
	// master under the name SentinelMaster. The proxy asks them for the master's
	// address at start and follows their failovers. Credentials, if the sentinels
	// require them, are never logged.
	Sentinels        []string `yaml:"sentinel" usage:"comma-separated Redis Sentinel HOST:PORT list that gives the master (instead of --master) and its failovers"`
	SentinelMaster   string   `yaml:"sentinel-master" usage:"name the sentinels monitor the master under (with --sentinel)"`
	SentinelUser     string   `yaml:"sentinel-user" usage:"ACL user on the sentinels (needs a password)"`
	SentinelPassword string   `yaml:"sentinel-password" env:"SYNCPROXY_SENTINEL_PASSWORD" usage:"password on the sentinels (AUTH)"`
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
		ReadPolicy:          "prefer-slave",
		ReadYourWrites:      true,
		TrackingMaxKeys:     defaultTrackingMaxKeys,
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
		NearCacheMaxValue:   64 << 10,
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
	for _, check := range []func() error{
		c.validateAddrs, c.validateBackend, c.validateReads, c.validateLimits,
		c.validateWeights, c.validateUsers, c.validateChoices, c.validateCredentials,
	} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// validateAddrs checks the addresses: the listeners, the master or the
// sentinels, the slaves.
func (c *Config) validateAddrs() error {
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
	return checkAddrList("slaves", c.Slaves, c.Master, "listed twice or is the master")
}

// validateBackend checks the settings of the backend connections and of the
// replication.
func (c *Config) validateBackend() error {
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
	case c.TrackingMaxKeys < 0:
		return fmt.Errorf("config: tracking-table-max-keys %d must not be negative", c.TrackingMaxKeys)
	case c.MaxPipeline < 1:
		return fmt.Errorf("config: max-pipeline %d must be at least 1", c.MaxPipeline)
	case c.WriteGroup < 1 || c.WriteGroup > 4096:
		return fmt.Errorf("config: write-group %d out of range 1..4096", c.WriteGroup)
	case c.ShutdownGrace < 0:
		return fmt.Errorf("config: shutdown-grace %v must not be negative", c.ShutdownGrace)
	}
	return nil
}

// validateReads checks the read policy and the consistency level.
func (c *Config) validateReads() error {
	if _, err := router.ParseReadPolicy(c.ReadPolicy); err != nil {
		return fmt.Errorf("config: %s", strings.TrimPrefix(err.Error(), "router: "))
	}
	if _, ok := parseConsistency(c.ReadConsistency); !ok {
		return fmt.Errorf("config: read-consistency %q: want session, global or eventual", c.ReadConsistency)
	}
	return nil
}

// validateLimits checks the limits and the timeouts.
func (c *Config) validateLimits() error {
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
	case c.NearCache < 0 || c.NearCacheMaxValue < 1:
		return errors.New("config: near-cache must not be negative, near-cache-max-value must be at least 1")
	case c.Threads < 0:
		return fmt.Errorf("config: threads %d must not be negative (0: every CPU)", c.Threads)
	}
	return nil
}

// validateWeights checks that each weight is a slave's, in range.
func (c *Config) validateWeights() error {
	for addr, w := range c.Weights {
		if !slices.Contains(c.Slaves, addr) || w < 1 || w > 1000 {
			return fmt.Errorf("config: weights: %q must be a slave's address with a weight in 1..1000", addr)
		}
	}
	return nil
}

// validateUsers checks the client accounts.
func (c *Config) validateUsers() error {
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
	return nil
}

// validateChoices checks the settings that take one of a few words.
func (c *Config) validateChoices() error {
	for _, ch := range []struct {
		name, value, want string
		valid             []string
	}{
		{"config-set", c.ConfigSet, "deny or broadcast", []string{"deny", "broadcast"}},
		{"on-master-reset", c.OnMasterReset, "resync or hold", []string{replicate.OnMasterResetResync, replicate.OnMasterResetHold}},
		{"log-level", c.LogLevel, "trace, debug, info, warn, error or disabled",
			[]string{"trace", "debug", "info", "warn", "error", "fatal", "panic", "disabled"}},
		{"log-format", c.LogFormat, "json, console or auto", []string{"auto", "json", "console"}},
	} {
		if !slices.Contains(ch.valid, ch.value) {
			return fmt.Errorf("config: %s %q: want %s", ch.name, ch.value, ch.want)
		}
	}
	return nil
}

// validateCredentials checks the backend credentials and the TLS settings.
func (c *Config) validateCredentials() error {
	switch {
	case c.MasterUser != "" && c.MasterPassword == "":
		return errors.New("config: master-user needs master-password")
	case c.SlaveUser != "" && c.SlavePassword == "":
		return errors.New("config: slave-user needs slave-password")
	}
	if _, err := c.ServerTLS(); err != nil {
		return err
	}
	_, err := c.BackendTLSConfig()
	return err
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

// BindFlags defines on fs a flag for every setting that has one, named as its
// config-file key and writing into c's field; c's values are the defaults the
// help shows. Parsing fs after the file was loaded over c makes the flags win.
func (c *Config) BindFlags(fs *flag.FlagSet) {
	v, t := reflect.ValueOf(c).Elem(), reflect.TypeOf(c).Elem()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Tag.Get("flag") == "-" {
			continue
		}
		name, usage := SettingName(f), f.Tag.Get("usage")
		if env := f.Tag.Get("env"); env != "" {
			usage += "; or env " + env
		}
		switch p := v.Field(i).Addr().Interface().(type) {
		case flag.Value:
			fs.Var(p, name, usage)
		case *string:
			fs.StringVar(p, name, *p, usage)
		case *bool:
			fs.BoolVar(p, name, *p, usage)
		case *int:
			fs.IntVar(p, name, *p, usage)
		case *int64:
			fs.Int64Var(p, name, *p, usage)
		case *time.Duration:
			fs.DurationVar(p, name, *p, usage)
		case *[]string:
			fs.Var((*listFlag)(p), name, usage)
		default:
			// A new field of another type: TestBindFlags finds it.
			panic("proxy: Config." + f.Name + ": no flag type for " + f.Type.String() + ` (tag it flag:"-")`)
		}
	}
}

// SettingName is the config-file key of a Config field, also its flag's name.
func SettingName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}

// ApplyEnv gives each empty setting that names an environment variable its
// value from getenv (os.Getenv): passwords there stay out of ps.
func (c *Config) ApplyEnv(getenv func(string) string) {
	v, t := reflect.ValueOf(c).Elem(), reflect.TypeOf(c).Elem()
	for i := 0; i < t.NumField(); i++ {
		if env := t.Field(i).Tag.Get("env"); env != "" && v.Field(i).String() == "" {
			v.Field(i).SetString(getenv(env))
		}
	}
}

// listFlag is a list setting as a flag: comma-separated, empty items left out.
type listFlag []string

func (l *listFlag) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

func (l *listFlag) Set(v string) error {
	var list []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			list = append(list, s)
		}
	}
	*l = list
	return nil
}
