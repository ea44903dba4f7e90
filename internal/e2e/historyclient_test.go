package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/history"
)

// Roles of a client's connections: a pooled client writes on one and reads on the
// other; an unpooled one does both on its write connection.
const (
	roleWrite = 0
	roleRead  = 1
)

// histRedial is the pause before a client dials again after a failed dial.
const histRedial = 10 * time.Millisecond

// histClient is one client of the history workload. A writer INCRs shared keys,
// SETs its own key (if it has one) to increasing values, reads, WAITs for both
// slaves and hands out CLIENT SYNCTOKEN tokens; a read-only client reads and now
// and then takes the latest token with CLIENT SYNCAFTER. Every operation goes into
// the history.
type histClient struct {
	id       int
	h        *history.History
	addrs    [2]string // the proxies of its write and read connections
	proxies  [2]int    // their numbers
	level    string    // CLIENT CONSISTENCY of every connection ("" for none)
	pooled   bool
	readOnly bool
	rnd      *rand.Rand
	tokens   *tokenBox
	connIDs  *atomic.Int64 // numbers connections across clients
	errs     *errList
	conns    [2]*histConn // by role; nil until dialed, and after a failure
	owned    int64        // the last value SET to its own key
}

// histConn is a connection of a client.
type histConn struct {
	c     redis.Conn
	id    int
	proxy int
}

// run runs operations until ctx ends.
func (c *histClient) run(ctx context.Context) {
	defer func() {
		for _, hc := range c.conns {
			if hc != nil {
				hc.c.Close()
			}
		}
	}()
	for ctx.Err() == nil {
		c.step(ctx)
	}
}

// step runs one operation chosen at random.
func (c *histClient) step(ctx context.Context) {
	r := c.rnd.Intn(100)
	switch {
	case c.readOnly && r < 5:
		if tok := c.tokens.get(); tok != "" {
			c.do(ctx, roleRead, history.Op{Kind: history.SyncAfter, Token: tok}, "CLIENT", "SYNCAFTER", tok)
		}
	case c.readOnly:
		c.read(ctx)
	case r < 45:
		key := "k" + strconv.Itoa(c.rnd.Intn(histShared))
		c.do(ctx, roleWrite, history.Op{Kind: history.Incr, Key: key}, "INCR", key)
	case r < 55 && c.id < histOwned:
		c.owned++
		key := "s" + strconv.Itoa(c.id)
		c.do(ctx, roleWrite, history.Op{Kind: history.Set, Key: key, Value: c.owned}, "SET", key, c.owned)
	case r < 58:
		c.do(ctx, roleWrite, history.Op{Kind: history.Wait}, "WAIT", 2, 50)
	case r < 63:
		if tok, ok := c.do(ctx, roleWrite, history.Op{Kind: history.SyncToken}, "CLIENT", "SYNCTOKEN"); ok {
			if s, _ := tok.([]byte); len(s) > 0 {
				c.tokens.put(string(s))
			}
		}
	default:
		c.read(ctx)
	}
}

// read GETs a key at random.
func (c *histClient) read(ctx context.Context) {
	keys := histShared + histOwned
	i := c.rnd.Intn(keys)
	key := "k" + strconv.Itoa(i)
	if i >= histShared {
		key = "s" + strconv.Itoa(i-histShared)
	}
	c.do(ctx, roleRead, history.Op{Kind: history.Get, Key: key}, "GET", key)
}

// do sends one command on the connection of role, records it as op, and returns
// the reply and whether the operation succeeded.
func (c *histClient) do(ctx context.Context, role int, op history.Op, cmd string, args ...interface{}) (interface{}, bool) {
	hc, err := c.conn(role)
	if err != nil {
		c.errs.add("client %d: dial: %v", c.id, err)
		select {
		case <-ctx.Done():
		case <-time.After(histRedial):
		}
		return nil, false
	}
	op.Client, op.Conn, op.Proxy = c.id, hc.id, hc.proxy
	call := c.h.Invoke(op)
	reply, err := hc.c.Do(cmd, args...)
	var rerr redis.Error
	switch {
	case err == nil:
		if err := complete(call, op.Kind, reply); err != nil {
			c.errs.add("client %d: %s: %v", c.id, op.Kind, err)
			return nil, false
		}
		return reply, true
	case errors.As(err, &rerr) && !strings.Contains(strings.ToLower(rerr.Error()), "unknown"):
		call.Fail(err)
	default: // no reply, or the proxy says the outcome is unknown
		call.Unknown(err)
		if !errors.As(err, &rerr) {
			hc.c.Close()
			c.conns[c.slot(role)] = nil
		}
	}
	c.errs.add("client %d conn %d: %s %v: %v", c.id, hc.id, cmd, args, err)
	return nil, false
}

// complete completes call with reply, or fails it on a reply of the wrong type.
func complete(call *history.Call, kind history.Kind, reply interface{}) error {
	var err error
	switch kind {
	case history.Incr, history.Wait:
		var n int64
		if n, err = redis.Int64(reply, nil); err == nil {
			call.OK(n)
		}
	case history.Get:
		if reply == nil {
			call.Nil()
			return nil
		}
		var n int64
		if n, err = redis.Int64(reply, nil); err == nil {
			call.OK(n)
		}
	case history.SyncToken:
		var s string
		if s, err = redis.String(reply, nil); err == nil {
			call.Token(s)
		}
	default:
		call.OK(0)
	}
	if err != nil {
		call.Fail(err)
		return fmt.Errorf("unexpected reply %v: %w", reply, err)
	}
	return nil
}

// slot is the index in conns of the connection of role.
func (c *histClient) slot(role int) int {
	if c.pooled {
		return role
	}
	return roleWrite
}

// conn returns the connection of role, dialed (and given the level) if needed.
func (c *histClient) conn(role int) (*histConn, error) {
	i := c.slot(role)
	if c.conns[i] != nil {
		return c.conns[i], nil
	}
	rc, err := redis.Dial("tcp", c.addrs[i], redis.DialConnectTimeout(histIOTimeout),
		redis.DialReadTimeout(histIOTimeout), redis.DialWriteTimeout(histIOTimeout))
	if err != nil {
		return nil, err
	}
	if c.level != "" {
		if _, err := rc.Do("CLIENT", "CONSISTENCY", c.level); err != nil {
			rc.Close()
			return nil, fmt.Errorf("CLIENT CONSISTENCY %s: %w", c.level, err)
		}
	}
	c.conns[i] = &histConn{c: rc, id: int(c.connIDs.Add(1)), proxy: c.proxies[i]}
	return c.conns[i], nil
}
