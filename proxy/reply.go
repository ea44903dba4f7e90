package proxy

import (
	"bytes"
	"strings"

	"github.com/tidwall/redcon"

	"github.com/syncproxy/syncproxy/replicate"
)

// hideMeta removes the replication metadata keys (syncproxy:*) from a KEYS reply
// (an array of keys) or a SCAN reply (a cursor and an array of keys), so that
// clients see the data set they wrote. Other replies pass unchanged.
func hideMeta(reply []byte) []byte {
	top := splitArray(reply)
	if top == nil {
		return reply
	}
	if len(top) == 2 && len(top[0]) > 0 && top[0][0] == '$' {
		if keys := splitArray(top[1]); keys != nil {
			out := redcon.AppendArray(nil, 2)
			out = append(out, top[0]...)
			return append(out, filterKeys(keys)...)
		}
	}
	return filterKeys(top)
}

// splitArray returns the raw frames of an array reply's elements (nil if b is not
// a non-null array). The frames alias b.
func splitArray(b []byte) [][]byte {
	n, resp := redcon.ReadNextRESP(b)
	if n == 0 || resp.Type != redcon.Array || resp.Count < 0 {
		return nil
	}
	out := make([][]byte, 0, resp.Count)
	resp.ForEach(func(e redcon.RESP) bool {
		out = append(out, e.Raw)
		return true
	})
	return out
}

// bulkData returns a bulk frame's content (nil if b is not a bulk string). It
// aliases b.
func bulkData(b []byte) []byte {
	n, resp := redcon.ReadNextRESP(b)
	if n == 0 || resp.Type != redcon.Bulk {
		return nil
	}
	return resp.Data
}

// bulkText is bulkData as a string.
func bulkText(b []byte) string { return string(bulkData(b)) }

// filterKeys encodes keys (bulk frames) as an array, without the metadata keys.
func filterKeys(keys [][]byte) []byte {
	kept := keys[:0:0]
	for _, k := range keys {
		if !bytes.HasPrefix(bulkData(k), []byte(replicate.KeyPrefix)) {
			kept = append(kept, k)
		}
	}
	out := redcon.AppendArray(nil, len(kept))
	for _, k := range kept {
		out = append(out, k...)
	}
	return out
}

// secretParams are the master's settings CONFIG GET does not show through the
// proxy: any client of the proxy could read the master's password otherwise.
var secretParams = map[string]bool{
	"requirepass": true, "masterauth": true, "tls-key-file-pass": true, "tls-client-key-file-pass": true,
}

// hiddenSecret replaces a secret's value in CONFIG GET replies.
const hiddenSecret = "(hidden by syncproxy)"

// hideSecrets rewrites CONFIG GET's [name, value, ...] reply with the values of
// secretParams hidden; a non-empty value only (an empty one says there is none).
func hideSecrets(reply []byte) []byte {
	items := splitArray(reply)
	if len(items)%2 != 0 {
		return reply
	}
	found := false
	for i := 0; i < len(items); i += 2 {
		if secretParams[strings.ToLower(bulkText(items[i]))] && len(bulkData(items[i+1])) > 0 {
			found = true
		}
	}
	if !found {
		return reply
	}
	out := redcon.AppendArray(nil, len(items))
	for i := 0; i < len(items); i += 2 {
		out = append(out, items[i]...)
		if secretParams[strings.ToLower(bulkText(items[i]))] && len(bulkData(items[i+1])) > 0 {
			out = redcon.AppendBulkString(out, hiddenSecret)
		} else {
			out = append(out, items[i+1]...)
		}
	}
	return out
}

// writeReply writes one reply of a batch to the client c. redcon's writer keeps
// the capacity its buffer grew to (up to 256 KiB) for as long as the client stays
// connected, so the proxy lets it hold at most maxKeptReply bytes, as Redis'
// 16 KiB reply buffer: beyond, what it holds is flushed, and a larger reply is
// written straight to the connection. buffered counts the bytes it holds.
func writeReply(c redcon.Conn, b []byte, buffered *int) error {
	if *buffered+len(b) > maxKeptReply {
		if err := flushConn(c); err != nil {
			return err
		}
		*buffered = 0
		if len(b) > maxKeptReply {
			_, err := c.NetConn().Write(b)
			return err
		}
	}
	c.WriteRaw(b)
	*buffered += len(b)
	return nil
}

// flushConn flushes what redcon's writer holds for c, a served or a detached
// connection.
func flushConn(c redcon.Conn) error {
	if dc, ok := c.(redcon.DetachedConn); ok {
		return dc.Flush()
	}
	return redcon.BaseWriter(c).Flush()
}
