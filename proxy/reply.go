package proxy

import (
	"bytes"

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

// filterKeys encodes keys (bulk frames) as an array, without the metadata keys.
func filterKeys(keys [][]byte) []byte {
	kept := keys[:0:0]
	for _, k := range keys {
		if !bytes.HasPrefix(k[bulkStart(k):], []byte(replicate.KeyPrefix)) {
			kept = append(kept, k)
		}
	}
	out := redcon.AppendArray(nil, len(kept))
	for _, k := range kept {
		out = append(out, k...)
	}
	return out
}
