package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strings"

	"github.com/tidwall/redcon"

	"github.com/syncproxy/syncproxy/router"
)

// The ACL commands describe the proxy's own users: the default user (whose
// password is requirepass) and the users of the config file. The backends' ACLs
// are never forwarded: they hold the master's password hashes. Each user is shown
// as Redis shows a user with the same rights, so that tools that read ACL LIST
// and ACL GETUSER understand it. Users are changed in the config file only.

// Rules of the users, as Redis 7.0 shows them.
const (
	aclRulesReadWrite = "+@all"
	// aclRulesReadOnly is what Redis shows for a user with the rights of
	// noPerm's read-only users (-@admin covers PFDEBUG and PFSELFTEST).
	aclRulesReadOnly = "+@all -@write -@admin -eval -script|kill -script|load -script|flush " +
		"-publish -evalsha -function|kill -spublish -fcall"
)

// errACLConfigured refuses the ACL subcommands that change or persist users.
func errACLConfigured(name string) string {
	return "ERR syncproxy: '" + name + "' is not available: syncproxy's users are set in its configuration (requirepass, users:)"
}

// aclUser is one user as the ACL commands show it.
type aclUser struct {
	name  string
	pass  string // "": no password (nopass)
	rules string
}

// aclUsers returns the proxy's users, sorted by name as Redis lists them.
func (c *Config) aclUsers() []aclUser {
	out := []aclUser{{name: "default", pass: c.RequirePass, rules: aclRulesReadWrite}}
	for _, u := range c.Users {
		rules := aclRulesReadWrite
		if u.Access == AccessReadOnly {
			rules = aclRulesReadOnly
		}
		out = append(out, aclUser{name: u.Name, pass: u.Password, rules: rules})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// line is the user as ACL LIST shows it.
func (u aclUser) line() string {
	return "user " + u.name + " " + strings.Join(u.flags(), " ") + u.hashes() + " ~* &* " + u.rules
}

func (u aclUser) flags() []string {
	if u.pass == "" {
		return []string{"on", "nopass"}
	}
	return []string{"on"}
}

// hashes is " #<sha256>" for a user with a password.
func (u aclUser) hashes() string {
	if u.pass == "" {
		return ""
	}
	return " #" + passwordHash(u.pass)
}

func passwordHash(p string) string {
	h := sha256.Sum256([]byte(p))
	return hex.EncodeToString(h[:])
}

// getUser is ACL GETUSER's reply for u.
func (u aclUser) getUser() []byte {
	b := redcon.AppendArray(nil, 12)
	b = redcon.AppendBulkString(b, "flags")
	flags := u.flags()
	b = redcon.AppendArray(b, len(flags))
	for _, f := range flags {
		b = redcon.AppendBulkString(b, f)
	}
	b = redcon.AppendBulkString(b, "passwords")
	if u.pass == "" {
		b = redcon.AppendArray(b, 0)
	} else {
		b = redcon.AppendArray(b, 1)
		b = redcon.AppendBulkString(b, passwordHash(u.pass))
	}
	for _, kv := range [][2]string{{"commands", u.rules}, {"keys", "~*"}, {"channels", "&*"}} {
		b = redcon.AppendBulkString(b, kv[0])
		b = redcon.AppendBulkString(b, kv[1])
	}
	b = redcon.AppendBulkString(b, "selectors")
	return redcon.AppendArray(b, 0)
}

// aclReply answers an ACL subcommand (name is its full name, "acl|list") from the
// proxy's users. forward: the master may answer it (ACL CAT, GENPASS, HELP, and
// subcommands it does not know, which it refuses); refused: the proxy cannot
// run it (its reply is the error).
func (sess *Session) aclReply(name string, args [][]byte) (reply []byte, refused, forward bool) {
	cfg := sess.s.config()
	switch name {
	case "acl|whoami":
		return appendBulk(nil, []byte(sess.userName())), false, false
	case "acl|users":
		users := cfg.aclUsers()
		b := redcon.AppendArray(nil, len(users))
		for _, u := range users {
			b = redcon.AppendBulkString(b, u.name)
		}
		return b, false, false
	case "acl|list":
		users := cfg.aclUsers()
		b := redcon.AppendArray(nil, len(users))
		for _, u := range users {
			b = redcon.AppendBulkString(b, u.line())
		}
		return b, false, false
	case "acl|getuser":
		for _, u := range cfg.aclUsers() {
			if u.name == string(args[2]) {
				return u.getUser(), false, false
			}
		}
		return []byte("$-1\r\n"), false, false
	case "acl|dryrun":
		return sess.aclDryRun(cfg, args), false, false
	case "acl|cat", "acl|genpass", "acl|help", "acl":
		return nil, false, true
	case "acl|log":
		return router.AppendError(nil, "ERR syncproxy: 'acl log' is not available: syncproxy keeps no ACL log"), true, false
	}
	return router.AppendError(nil, errACLConfigured(strings.ReplaceAll(name, "|", " "))), true, false
}

// aclDryRun answers ACL DRYRUN user command [arg ...] as Redis does.
func (sess *Session) aclDryRun(cfg *Config, args [][]byte) []byte {
	user := string(args[2])
	access, found := AccessReadWrite, user == "default"
	for _, u := range cfg.Users {
		if u.Name == user {
			access, found = u.Access, true
		}
	}
	if !found {
		return router.AppendError(nil, "ERR User '"+sanitize(args[2], 128)+"' not found")
	}
	ci := sess.s.router.Table().Lookup(args[3:])
	if ci == nil {
		return router.AppendError(nil, "ERR Command '"+sanitize(args[3], 128)+"' not found")
	}
	if !ci.CheckArity(len(args) - 3) {
		return router.AppendError(nil, errWrongArity(ci.Name))
	}
	if access == AccessReadOnly && readOnlyRefuses(ci) {
		return appendBulk(nil, []byte("This user has no permissions to run the '"+ci.Name+"' command"))
	}
	return []byte("+OK\r\n")
}
