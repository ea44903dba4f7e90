package replicate

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strings"
)

// Metadata keys kept on the backends, all in DB 0. Clients may not write them.
const (
	KeyPrefix  = "syncproxy:"
	KeyEpoch   = "syncproxy:epoch"   // master: replication id (random hex)
	KeySeq     = "syncproxy:seq"     // master: last sequence number assigned
	KeyBacklog = "syncproxy:backlog" // master: stream of sync messages, ID <seq>-0
	KeyApplied = "syncproxy:applied" // slave: "<epoch>:<seq>" of the last applied message
	KeyResync  = "syncproxy:resync"  // slave: token of the applier resyncing it
	KeyLease   = "syncproxy:lease"   // slave: id of the proxy whose applier applies to it
	KeyErrs    = "syncproxy:errs"    // master: error count during a native write's transaction
)

// keyApplyGuard is the slave key an apply transaction's check writes (and
// deletes) to fail the transaction (applytx.go); it never stays.
const keyApplyGuard = "syncproxy:applyguard"

// PatternMayReachReserved reports whether a SORT BY or GET pattern may read a
// reserved key: a pattern looks up the key made of its text with the element in
// place of its first '*' (no '*': no lookup; "#": the element itself), so it may
// reach one when what precedes the '*' starts with KeyPrefix or is a beginning
// of it (an element can complete it).
func PatternMayReachReserved(p []byte) bool {
	star := bytes.IndexByte(p, '*')
	if star < 0 {
		return false
	}
	pre := p[:star]
	return bytes.HasPrefix(pre, []byte(KeyPrefix)) || strings.HasPrefix(KeyPrefix, string(pre))
}

// MaxScriptArgs bounds the arguments of one write run inside the master script:
// Lua's unpack() cannot pass more than about 8000 values to redis.call. Larger
// writes run natively (WriteNativeCall) when they split (SplitOf).
const MaxScriptArgs = 7900

// masterScript runs a group of client writes on the master and, atomically with
// them, assigns the group a sequence number, appends the sync message to the
// backlog and publishes it.
//
// ARGV: epoch-candidate, backlog-maxlen, channel, now (unix ms, the proxy's clock:
// TIME would cost a call per script), conn-db, n, then per command:
// db, argc, mode, effect, args...
//
// Modes "p" and "n" surround a command run natively (too large for unpack; see
// WriteNativeCall): "p" notes the error count, "n" (its one argument the number
// of effects) numbers the effect unless the command failed.
//
// effect is the command's sync-message encoding, built by the proxy from the
// client's RESP bytes so that Lua need not build it. mode "r" marks a read (in a
// transaction): no effect. mode "q" is "x" for a blocked client's retries: no effect
// when the command returned nil. mode "x" asks the script to
// derive the effect from what the command did instead (non-deterministic and
// time-relative commands, see rewrite below), as Redis' own replication does.
//
// It returns {seq, epoch, reply1, ..., replyN}; seq is 0 and epoch empty when no
// command had an effect.
// An integer reply too large for a Lua number comes back as the status
// "\x01I<digits>", which the proxy turns back into an integer reply.
const masterScript = scriptUserLine + masterBody

// scriptUserLine is the master script's first line. For a client's EVAL, the proxy
// composes a script of its own (UserScript): the client's script as a function on
// this line — so that error line numbers stay the client's — then masterBody.
const scriptUserLine = "local __user, __sha, __spec, __denied, __msg_key, __msg_channel, __msg_swapdb, __first\n"

const masterBody = `
-- Every call goes through redis.pcall: some servers (miniredis) keep a separate
-- SELECTed DB for call and pcall.
local function call(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then error(r.err) end
  return r
end
local function try(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then return nil end
  return r
end
` + encodeEffect + `
local function num(x) return string.format('%d', x) end
local BIG = 9007199254740992
` + recoverMeta + numberMessage + bitfieldExact + `

-- The effect of a key's expiry, as absolute time.
local function ttl_effect(db, key)
  local t = call('PEXPIRETIME', key)
  if t == -2 then return enc(db, {'DEL', key}) end
  if t == -1 then return enc(db, {'PERSIST', key}) end
  return enc(db, {'PEXPIREAT', key, num(t)})
end

-- The effect of a string key's whole state: value and absolute expiry.
local function string_effect(db, key)
  local v = try('GET', key)
  if v == nil then return nil end
  if v == false then return enc(db, {'DEL', key}) end
  local t = call('PEXPIRETIME', key)
  if t > 0 then return enc(db, {'SET', key, v, 'PXAT', num(t)}) end
  return enc(db, {'SET', key, v})
end

local function has_opt(a, from, to, names)
  for i = from, to do
    if names[string.upper(a[i])] then return true end
  end
  return false
end

local cur_db
local meta_saved
-- A flush keeps the replication metadata. FLUSHDB 0 keeps the backlog too (a
-- FLUSHALL need not: slaves behind it skip what it wiped).
local function save_meta(all)
  local d = cur_db
  call('SELECT', 0)
  meta_saved = {call('GET', 'syncproxy:epoch'), call('GET', 'syncproxy:seq'), false}
  if not all then meta_saved[3] = try('DUMP', 'syncproxy:backlog') or false end
  call('SELECT', d)
end
local function restore_meta()
  local d = cur_db
  call('SELECT', 0)
  if meta_saved[1] and call('EXISTS', 'syncproxy:epoch') == 0 then
    call('SET', 'syncproxy:epoch', meta_saved[1])
  end
  if meta_saved[2] and call('EXISTS', 'syncproxy:seq') == 0 then
    call('SET', 'syncproxy:seq', meta_saved[2])
  end
  if meta_saved[3] and call('EXISTS', 'syncproxy:backlog') == 0 then
    try('RESTORE', 'syncproxy:backlog', 0, meta_saved[3])
  end
  call('SELECT', d)
end

-- A command too large for this script runs natively, in a transaction between
-- a call in mode 'p' and one in mode 'n' (replicate.WriteNativeCall): the first
-- notes the master's count of error replies in syncproxy:errs, the second
-- numbers the command's effects only if the count did not move (the command did
-- not fail). Where INFO does not give the count, the command is taken as done.
local function error_count()
  local info = redis.pcall('INFO', 'stats')
  if type(info) ~= 'string' then return nil end
  return string.match(info, 'total_error_replies:(%d+)')
end
local function errs_mark()
  local c, d = error_count(), cur_db
  call('SELECT', 0)
  if c then try('SET', 'syncproxy:errs', c) else call('DEL', 'syncproxy:errs') end
  call('SELECT', d)
end
local function errs_moved()
  local c, d = error_count(), cur_db
  call('SELECT', 0)
  local m = call('GET', 'syncproxy:errs')
  if m then call('DEL', 'syncproxy:errs') end
  call('SELECT', d)
  return c ~= nil and m ~= false and c ~= m
end

-- The effect of claiming stream entries, as Redis propagates it: per entry, an
-- XCLAIM that forces its owner, delivery time and delivery count.
local function claim_effects(db, key, group, consumer, ids)
  local t = call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local parts = {}
  for _, id in ipairs(ids) do
    local p = call('XPENDING', key, group, id, id, 1)
    if p[1] then
      -- The delivery time is pinned on the master too: Redis' own clock reads
      -- may differ by a millisecond from TIME's.
      local c = {'XCLAIM', key, group, consumer, '0', id, 'TIME', num(now),
        'RETRYCOUNT', num(p[1][4]), 'FORCE', 'JUSTID'}
      call(unpack(c))
      parts[#parts + 1] = enc(db, c)
    end
  end
  return parts
end

local function entry_ids(list)
  local ids = {}
  for _, e in ipairs(list) do
    if type(e) == 'table' then ids[#ids + 1] = e[1] elseif e then ids[#ids + 1] = e end
  end
  return ids
end

-- rewrite returns the effect of a mode-x command (nil for none) and, optionally,
-- a replacement reply. a holds the command's arguments, a[1] its name.
local function rewrite(db, a, r, effect)
  local name = string.lower(a[1])
  local key = a[2]
  if name == 'spop' then
    if r == false then return nil end
    if type(r) == 'table' then
      if #r == 0 then return nil end
      -- In chunks: a slave applies each effect with unpack(), which is bounded.
      local parts, k = {}, 0
      for i = 1, #r, 1000 do
        local t = {'SREM', key}
        for j = i, math.min(i + 999, #r) do t[#t + 1] = r[j] end
        parts[#parts + 1] = enc(db, t)
        k = k + 1
      end
      return table.concat(parts), nil, k
    end
    return enc(db, {'SREM', key, r})
  elseif name == 'xreadgroup' then
    -- The read itself (deterministic), then the delivery times pinned.
    if r == false or has_opt(a, 5, #a, {NOACK = true}) then return effect end
    local parts = {effect}
    for _, st in ipairs(r) do
      for _, c in ipairs(claim_effects(db, st[1], a[3], a[4], entry_ids(st[2]))) do
        parts[#parts + 1] = c
      end
    end
    return table.concat(parts), nil, #parts
  elseif name == 'xclaim' or name == 'xautoclaim' then
    local claimed, deleted = r, {}
    if name == 'xautoclaim' then claimed, deleted = r[2], r[3] or {} end
    local parts = claim_effects(db, key, a[3], a[4], entry_ids(claimed))
    for _, id in ipairs(deleted) do
      parts[#parts + 1] = enc(db, {'XACK', key, a[3], id})
    end
    if #parts == 0 then return nil end
    return table.concat(parts), nil, #parts
  elseif name == 'lmpop' or name == 'zmpop' or name == 'lmove' then
    -- The non-blocking forms of blocking pops, tried again and again while a
    -- client waits: nothing popped, nothing to replicate.
    if r == false then return nil end
    return effect
  elseif name == 'incrbyfloat' then
    return enc(db, {'SET', key, r, 'KEEPTTL'})
  elseif name == 'hincrbyfloat' then
    return enc(db, {'HSET', key, a[3], r})
  elseif name == 'expire' or name == 'pexpire' then
    if r == 0 then return nil end
    return ttl_effect(db, key)
  elseif name == 'getex' then
    if r == false then return nil end
    return ttl_effect(db, key)
  elseif name == 'set' then
    if has_opt(a, 4, #a, {EX = true, PX = true}) then return string_effect(db, key) end
    return effect
  elseif name == 'setex' or name == 'psetex' then
    return string_effect(db, key)
  elseif name == 'restore' then
    local d = call('DUMP', key)
    if d == false then return enc(db, {'DEL', key}) end
    local t = call('PEXPIRETIME', key)
    if t < 0 then t = 0 end
    return enc(db, {'RESTORE', key, num(t), d, 'REPLACE', 'ABSTTL'})
  elseif name == 'xadd' then
    if r == false then return nil end
    local i, trim = 3, false
    while i <= #a do
      local o = string.upper(a[i])
      if o == 'NOMKSTREAM' then
        i = i + 1
      elseif o == 'MAXLEN' or o == 'MINID' then
        trim = true
        i = i + 1
        if a[i] == '~' or a[i] == '=' then i = i + 1 end
        i = i + 1
      elseif o == 'LIMIT' then
        i = i + 2
      else
        break
      end
    end
    local t = {'XADD', key, r}
    for j = i + 1, #a do t[#t + 1] = a[j] end
    local e = enc(db, t)
    if trim then
      return e .. enc(db, {'XTRIM', key, 'MAXLEN', '=', num(call('XLEN', key))}), nil, 2
    end
    return e
  elseif name == 'xtrim' then
    if r == 0 then return nil end
    return enc(db, {'XTRIM', key, 'MAXLEN', '=', num(call('XLEN', key))})
  elseif name == 'incr' or name == 'incrby' or name == 'decr' or name == 'decrby' then
    if r >= BIG or r <= -BIG then return effect, {ok = '\1I' .. call('GET', key)} end
    return effect
  elseif name == 'hincrby' then
    if r >= BIG or r <= -BIG then return effect, {ok = '\1I' .. call('HGET', key, a[3])} end
    return effect
  end
  return effect
end

-- A script's reply as Redis converts it for a RESP2 client when the script
-- left RESP3 on: booleans become :1 and :0 instead of :1 and a null. Deep (or
-- cyclic) tables are left as they are below a bound. Fields are read raw, as
-- Redis reads a reply: a client's metatable runs no code here, where an error
-- would end the call after its writes ran.
local function resp3_bools(v, depth)
  if v == true then return 1 elseif v == false then return 0 end
  depth = (depth or 0) + 1
  if depth > 1000 or type(v) ~= 'table' or type(rawget(v, 'err')) == 'string' or
    type(rawget(v, 'ok')) == 'string' or type(rawget(v, 'double')) == 'number' or
    type(rawget(v, 'big_number')) == 'string' then
    return v
  end
  if type(rawget(v, 'map')) == 'table' then
    local m = {}
    for k, x in pairs(rawget(v, 'map')) do m[k] = resp3_bools(x, depth) end
    return {map = m}
  end
  if type(rawget(v, 'set')) == 'table' or type(rawget(v, 'verbatim_string')) == 'table' then return v end
  local t, i = {}, 1
  while rawget(v, i) ~= nil do
    t[i] = resp3_bools(rawget(v, i), depth)
    i = i + 1
  end
  return t
end

local epoch_c, maxlen, channel, ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local conndb = ARGV[5]
local n = tonumber(ARGV[6])
local pos = 7
cur_db = conndb
local out = {0, ''}
local eff = {}
local ne = 0
-- Client scripts (mode 'e'; UserScript composes them). Each runs with a redis
-- table of ours: every command it runs is checked against __spec (the proxy's
-- command table, see Guard) before it runs, numbers become strings as Redis
-- itself converts them, and the effects of its writes are recorded, as Redis'
-- effect replication does. The library functions the checks use are taken
-- before the client's code runs.
local rpcall, l_loadstring, l_type, l_select, l_unpack, l_tonumber, l_error =
  redis.pcall, loadstring, type, select, unpack, tonumber, error
local s_lower, s_sub, s_byte, s_find, s_match, s_format, s_gmatch =
  string.lower, string.sub, string.byte, string.find, string.match, string.format, string.gmatch

-- spec returns what __spec says of a command (flags as booleans, legacy key
-- positions f, l, st), found once per script call; a command not listed gets m.
local specs = {}
local function spec(name)
  local t = specs[name]
  if t then return t end
  t = {m = true, known = false}
  local i = s_find(__spec, '\n' .. name .. ' ', 1, true)
  if i then
    local fl, f, l, st, ar = s_match(__spec, '^(%S+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+)', i + #name + 2)
    t = {known = true, f = l_tonumber(f), l = l_tonumber(l), st = l_tonumber(st), ar = l_tonumber(ar)}
    for c in s_gmatch(fl, '%a') do t[c] = true end
  end
  specs[name] = t
  return t
end

-- reserved: the byte test first spares most keys a substring.
local function reserved(s)
  return l_type(s) == 'string' and s_byte(s, 1) == 115 and s_sub(s, 1, 10) == 'syncproxy:'
end

-- pattern_reserved: whether a SORT BY or GET pattern may read a reserved key,
-- as replicate.PatternMayReachReserved says for the proxy.
local function pattern_reserved(p)
  if l_type(p) ~= 'string' then return false end
  local star = s_find(p, '*', 1, true)
  if not star then return false end
  local pre = s_sub(p, 1, star - 1)
  return s_sub(pre, 1, 10) == 'syncproxy:' or s_sub('syncproxy:', 1, #pre) == pre
end

-- sort_reserved: SORT's keys are the sorted key and the last STORE's
-- destination; its BY and GET patterns read keys named after the elements,
-- refused when they may name a reserved one (as outside scripts).
local function sort_reserved(a, n)
  if reserved(a[2]) then return true end
  local store, i = nil, 3
  while i <= n do
    local o = l_type(a[i]) == 'string' and s_lower(a[i]) or ''
    if o == 'limit' then
      i = i + 2
    elseif o == 'get' or o == 'by' then
      i = i + 1
      if pattern_reserved(a[i]) then return true end
    elseif o == 'store' and i < n then
      store = i + 1
    end
    i = i + 1
  end
  return store ~= nil and reserved(a[store])
end

-- keys_reserved reports whether a command names a reserved key.
local function keys_reserved(a, n, t)
  if t.m then
    for j = 2, n do
      if reserved(a[j]) then return true end
    end
    return false
  elseif t.s then
    return sort_reserved(a, n)
  end
  -- Positions count from the name, 0 (a[1]).
  local f, l, st = t.f, t.l, t.st
  if f <= 0 then return false end
  if l < 0 then l = l + n end
  if l > n - 1 then l = n - 1 end
  if st <= 0 then st = 1 end
  for j = f, l, st do
    if reserved(a[j + 1]) then return true end
  end
  return false
end

local function dbindex(s)
  if l_type(s) == 'string' and s_match(s, '^[+-]?%d+$') then return l_tonumber(s) end
  return nil
end

-- refusal returns the error a client script gets for a command the proxy does
-- not let clients run (the same reply as outside scripts), the command's name
-- (lower case) and what __spec says of it (of the container for a subcommand).
local function refusal(a, n)
  if l_type(a[1]) ~= 'string' then return nil, '', spec('') end
  local name = s_lower(a[1])
  local top = spec(name)
  local t, full = top, name
  if top.c and l_type(a[2]) == 'string' then
    local sub = name .. '|' .. s_lower(a[2])
    local st = spec(sub)
    if st.known then t, full = st, sub end
  end
  if t.d then return __denied[1] .. full .. __denied[2], name, top end
  if name == 'swapdb' then
    local x, y = dbindex(a[2]), dbindex(a[3])
    if x and y and (x == 0 or y == 0) then return __msg_swapdb, name, top end
  end
  if (name == 'publish' or name == 'spublish') and a[2] == channel then return __msg_channel, name, top end
  if keys_reserved(a, n, t) then return __msg_key, name, top end
  return nil, name, top, t
end

-- norm3 gives a reply the shape it has under RESP2, which rewrite expects, when
-- a client script switched to RESP3: a null is false, a set an array of its
-- members, a map an array of {key, value} pairs (XREADGROUP's streams).
local function norm3(r)
  if r == nil then return false end
  if l_type(r) ~= 'table' then return r end
  if l_type(r.set) == 'table' then
    local t = {}
    for k in pairs(r.set) do t[#t + 1] = k end
    return t
  end
  if l_type(r.map) == 'table' then
    local t = {}
    for k, v in pairs(r.map) do t[#t + 1] = {k, norm3(v)} end
    return t
  end
  return r
end

-- resp3_reply appends to buf a script's reply v as Redis 7.0 writes it to a
-- RESP3 client (luaReplyToRedisReply); lua3: the script left RESP3 on (its
-- booleans are RESP3's). slots: what Redis' C stack would hold as it writes v
-- (2 for the reply, then 1 per array, 3 per set or map value, 4 per map key):
-- where Redis' lua_checkstack(4) fails (LUAI_MAXCSTACK 8000), its error in place.
local function line3(s) return (string.gsub(s, '[\r\n]', ' ')) end
local function resp3_reply(v, buf, lua3, slots)
  local t = l_type(v)
  if slots + 4 > 8000 then
    buf[#buf + 1] = '-ERR reached lua stack limit\r\n'
  elseif t == 'string' then
    buf[#buf + 1] = '$' .. #v .. '\r\n' .. v .. '\r\n'
  elseif t == 'boolean' then
    if lua3 then buf[#buf + 1] = v and '#t\r\n' or '#f\r\n'
    else buf[#buf + 1] = v and ':1\r\n' or '_\r\n' end
  elseif t == 'number' then
    buf[#buf + 1] = ':' .. s_format('%d', v) .. '\r\n'
  elseif t ~= 'table' then
    buf[#buf + 1] = '_\r\n'
  elseif l_type(rawget(v, 'err')) == 'string' then
    buf[#buf + 1] = '-' .. line3(v.err) .. '\r\n'
  elseif l_type(rawget(v, 'ok')) == 'string' then
    buf[#buf + 1] = '+' .. line3(v.ok) .. '\r\n'
  elseif l_type(rawget(v, 'double')) == 'number' then
    buf[#buf + 1] = ',' .. s_format('%.17g', v.double) .. '\r\n'
  elseif l_type(rawget(v, 'big_number')) == 'string' then
    buf[#buf + 1] = '(' .. line3(v.big_number) .. '\r\n'
  elseif l_type(rawget(v, 'verbatim_string')) == 'table' and l_type(rawget(v.verbatim_string, 'format')) == 'string' and
    l_type(rawget(v.verbatim_string, 'string')) == 'string' then
    -- Redis takes the format's first 3 bytes up to a NUL, padded with spaces.
    local vs = v.verbatim_string
    local f = s_sub(s_match(vs.format, '^[^%z]*') .. '   ', 1, 3)
    buf[#buf + 1] = '=' .. (#vs.string + 4) .. '\r\n' .. f .. ':' .. vs.string .. '\r\n'
  elseif l_type(rawget(v, 'map')) == 'table' then
    local head, n = #buf + 1, 0
    buf[head] = ''
    for k, x in pairs(v.map) do
      resp3_reply(k, buf, lua3, slots + 4)
      resp3_reply(x, buf, lua3, slots + 3)
      n = n + 1
    end
    buf[head] = '%' .. n .. '\r\n'
  elseif l_type(rawget(v, 'set')) == 'table' then
    local head, n = #buf + 1, 0
    buf[head] = ''
    for k in pairs(v.set) do
      resp3_reply(k, buf, lua3, slots + 3)
      n = n + 1
    end
    buf[head] = '~' .. n .. '\r\n'
  else
    local head, n = #buf + 1, 0
    buf[head] = ''
    while rawget(v, n + 1) ~= nil do
      resp3_reply(rawget(v, n + 1), buf, lua3, slots + 1)
      n = n + 1
    end
    buf[head] = '*' .. n .. '\r\n'
  end
end

-- run_split runs a write too large for unpack (mode s<head>,<group>,<parts>: a
-- transaction's; outside one such writes run natively) in parts of the same
-- command, each with the command's head (name, key, options), as the slaves
-- apply its effect. Its arguments are checked whole first (ZADD and GEOADD on a
-- scratch key, stream IDs with XACK), so that it fails whole, as Redis fails it,
-- and nothing of it applies; its reply is Redis' for the whole command.
local split_last = {rpush = true, lpush = true, rpushx = true, lpushx = true, mset = true, hmset = true}
local function split_run(pos, last, head, group, key)
  local h = {}
  for j = 0, head - 1 do h[j + 1] = ARGV[pos + j] end
  if key then h[2] = key end
  local per = math.floor((7000 - head) / group) * group
  local i = pos + head
  return function()
    if i > last then return nil end
    local a = {}
    for j = 1, head do a[j] = h[j] end
    local to = math.min(i + per - 1, last)
    for j = i, to do a[#a + 1] = ARGV[j] end
    i = to + 1
    return rpcall(l_unpack(a))
  end
end
local function run_split(pos, last, spec)
  local head, group = l_tonumber(s_match(spec, '^s(%d+),')), l_tonumber(s_match(spec, '^s%d+,(%d+),'))
  local name = s_lower(ARGV[pos])
  local rem = (last - pos - head + 1) % group
  if rem ~= 0 then
    -- A wrong count: the head and the last group and the rest give Redis' error.
    local a = {}
    for j = 0, head - 1 do a[j + 1] = ARGV[pos + j] end
    for j = last - group - rem + 1, last do a[#a + 1] = ARGV[j] end
    return rpcall(l_unpack(a))
  end
  local scratch = 'syncproxy:split'
  local check = name == 'zadd' or name == 'geoadd'
  if name == 'xack' or name == 'xdel' then
    local ty = rpcall('TYPE', ARGV[pos + 1])
    ty = l_type(ty) == 'table' and ty.ok or ''
    if ty ~= 'none' and ty ~= 'stream' then return split_run(pos, last, head, group)() end
    if name == 'xack' and (ty == 'none' or rpcall('XPENDING', ARGV[pos + 1], ARGV[pos + 2]).err) then
      return 0 -- no key or group: XACK acks nothing, its IDs unread
    end
    check = name == 'xack' or ty == 'stream'
  end
  if check then
    local next_part = split_run(pos, last, head, group, scratch)
    if name == 'xack' or name == 'xdel' then
      -- XACK parses the IDs of a stream and group that exist (XDEL's the same way).
      rpcall('XGROUP', 'CREATE', scratch, 'g', '$', 'MKSTREAM')
      local h = {'XACK', scratch, 'g'}
      local i = pos + head
      next_part = function()
        if i > last then return nil end
        local a = {h[1], h[2], h[3]}
        for j = i, math.min(i + 6999, last) do a[#a + 1] = ARGV[j] end
        i = i + 7000
        return rpcall(l_unpack(a))
      end
    end
    local r = next_part()
    while r ~= nil do
      if l_type(r) == 'table' and r.err then
        rpcall('DEL', scratch)
        return r
      end
      r = next_part()
    end
    rpcall('DEL', scratch)
  end
  local out, next_part = 0, split_run(pos, last, head, group)
  local r = next_part()
  while r ~= nil do
    if l_type(r) == 'table' and (r.err or r.ok) then
      if r.err then return r end
      out = r
    elseif split_last[name] then
      out = r
    elseif name == 'pfadd' then
      if r == 1 then out = 1 end
    else
      out = out + r
    end
    r = next_part()
  end
  return out
end

-- shebang reads a client script's #! line as Redis 7.0 does
-- (evalExtractShebangFlags): it returns the body with the line's text cut (its
-- newline kept: lines keep their numbers), whether the line says no-writes, the
-- error for a line Redis refuses, and whether there was a line.
local shebang_flags = {['no-writes'] = true, ['allow-oom'] = true, ['allow-stale'] = true,
  ['no-cluster'] = true, ['allow-cross-slot-keys'] = true}
local __msg_read_only = 'ERR Write commands are not allowed from read-only scripts.'
local __msg_write_flag_ro = 'ERR Can not execute a script with write flag using *_ro command.'
local function shebang(body)
  if s_sub(body, 1, 2) ~= '#!' then return body, false, nil, false end
  local nl = s_find(body, '\n', 1, true)
  if not nl then return nil, false, 'ERR Invalid script shebang', true end
  local parts = {}
  for p in s_gmatch(s_sub(body, 1, nl - 1), '%S+') do parts[#parts + 1] = p end
  if parts[1] ~= '#!lua' then
    return nil, false, 'ERR Unexpected engine in script shebang: ' .. tostring(parts[1]), true
  end
  local nowrites = false
  for j = 2, #parts do
    local fl = s_match(parts[j], '^flags=(.*)$')
    if not fl then return nil, false, 'ERR Unknown lua shebang option: ' .. parts[j], true end
    for f in s_gmatch(fl, '[^,]+') do
      if not shebang_flags[f] then return nil, false, 'ERR Unexpected flag in script shebang: ' .. f, true end
      nowrites = nowrites or f == 'no-writes'
    end
  end
  return s_sub(body, nl), nowrites, nil, true
end

-- run_user runs a client's script; ARGV[pos..last] are numkeys, keys, args.
-- With body (a transaction's script, mode t) it runs body instead of __user:
-- compiled here as a chunk of its own, named as Redis names it.
local function run_user(db, pos, last, body, ro, resp3)
  local fn, sha, first = __user, __sha, __first or '1'
  if body then
    sha = redis.sha1hex(body)
    local src, nowrites, e, flagged = shebang(body)
    if e then return {err = e} end
    first = flagged and '2' or '1'
    if ro and flagged and not nowrites then return {err = __msg_write_flag_ro} end
    ro = ro or nowrites
    fn, e = l_loadstring('local KEYS, ARGV, redis, _G, loadstring, load = ...; ' .. src, '@user_script')
    if not fn then return {err = 'ERR Error compiling script (new function): ' .. tostring(e)} end
  end
  local nk = l_tonumber(ARGV[pos])
  local keys, argv = {}, {}
  for j = 1, nk do keys[j] = ARGV[pos + j] end
  for j = pos + nk + 1, last do argv[#argv + 1] = ARGV[j] end
  local edb = db
  local function rec(...)
    local n = l_select('#', ...)
    local a = {...}
    for j = 1, n do
      -- As Redis converts a number argument (luaArgsToRedisArgv: %.17g), so
      -- that the master and the effect get the same string.
      if l_type(a[j]) == 'number' then a[j] = s_format('%.17g', a[j]) end
    end
    local msg, name, top, t = refusal(a, n)
    -- A read-only script (EVAL_RO, #!lua flags=no-writes) in a transaction:
    -- Redis' refusal, which it checks after a wrong arity and a noscript
    -- command (the server refuses those below).
    if ro and t and (t.w or t.r) and not t.c and not t.n and
      (t.ar == 0 or n == t.ar or t.ar < 0 and n >= -t.ar) then
      return {err = __msg_read_only}
    end
    if msg then return {err = msg} end
    local flush = name == 'flushall' or (name == 'flushdb' and edb == '0')
    if flush then save_meta(name == 'flushall') end
    local res = rpcall(l_unpack(a, 1, n))
    if flush then restore_meta() end
    if l_type(res) == 'table' and res.err then return res end
    if name == 'select' then
      edb = s_format('%d', l_tonumber(a[2]))
      cur_db = edb
    elseif top.w then
      local e, _, k = rewrite(edb, a, norm3(res), enc(edb, a))
      if e then
        eff[#eff + 1] = e
        ne = ne + (k or 1)
      end
    end
    return res
  end
  local proxy = setmetatable({
    call = function(...)
      local res = rec(...)
      -- Raised from the caller's line, marked as a command's error.
      if l_type(res) == 'table' and res.err then l_error('\1' .. res.err, 2) end
      return res
    end,
    pcall = rec,
  }, {__index = redis, __metatable = false})
  -- The client's code sees this redis table only: _G, loadstring and load are
  -- replaced too, or they would hand it the server's.
  local genv, sload
  genv = setmetatable({}, {
    __metatable = false,
    __newindex = function() l_error('Attempt to modify a readonly table', 2) end,
    __index = function(_, k)
      if k == 'redis' then return proxy elseif k == '_G' then return genv
      elseif k == 'KEYS' then return keys elseif k == 'ARGV' then return argv
      elseif k == 'loadstring' or k == 'load' then return sload end
      return _G[k]
    end,
  })
  sload = function(s, name)
    if l_type(s) == 'function' then
      local parts = {}
      while true do
        local p = s()
        if p == nil or p == '' then break end
        parts[#parts + 1] = p
      end
      s = table.concat(parts)
    end
    -- Compiled alone first: the chunk must be whole before it is wrapped.
    local f, e = l_loadstring(s, name)
    if not f then return f, e end
    f, e = l_loadstring('local redis, _G, loadstring, load, KEYS, ARGV = ... return (function(...) ' ..
      s .. '\nend)(select(7, ...))', name or s)
    if not f then return f, e end
    return function(...) return f(proxy, genv, sload, sload, keys, argv, ...) end
  end
  -- SCRIPT KILL: Redis raises its error from a hook that, once the script is
  -- killed, raises it again on every new line. The handler runs where it was
  -- raised, hooks off: it notes the client's line (the frame below it); on the
  -- same line, the error is then raised on that line of a chunk named as the
  -- client's, for Redis to word as for the client's script.
  local kline
  local function onerr(e)
    if l_type(e) == 'table' and s_find(tostring(e.err), 'Script killed by user with SCRIPT KILL', 1, true) then
      local _, w = pcall(l_error, '', 3)
      kline = l_tonumber(s_match(l_type(w) == 'string' and w or '', '^user_script:(%d+):'))
    end
    return e
  end
  local ok, res = xpcall(function() return fn(keys, argv, proxy, genv, sload, sload) end, onerr) if kline then l_loadstring(string.rep('\n', kline - 1) .. 'return', '@user_script')() end
  local lua3 = rpcall('GET', 'syncproxy:resp') == nil
  -- The script switched to RESP3 (redis.setresp(3)): back to RESP2 for what
  -- follows.
  if lua3 then redis.setresp(2) end
  -- The reply's fields are read raw (rawerr): a client's metatable runs no code
  -- out here, where an error would end the call after the script's writes ran.
  local rawerr = l_type(res) == 'table' and rawget(res, 'err')
  if ok and resp3 and l_type(rawerr) ~= 'string' then
    -- A RESP3 client: the reply as Redis writes it to one, in a bulk string.
    local buf = {}
    resp3_reply(res, buf, lua3, 2)
    return table.concat(buf)
  end
  -- A RESP2 client: booleans replied as RESP3 would (:1 and :0) when the
  -- script left RESP3 on.
  if ok and lua3 then res = resp3_bools(res) end
  if ok then return res end
  -- Redis' wording: a command's error, or the script's, with where it was.
  local _, msg = pcall(tostring, rawerr or res)
  if l_type(msg) ~= 'string' then msg = 'Error raised by the error object\'s __tostring' end
  local line, rest = s_match(msg, '^user_script:(%d+): (.*)$')
  if not line and s_sub(msg, 1, 1) == '\1' then
    -- Raised by a tail call (return redis.call(...)): Lua keeps no line; the
    -- script's first (after a #! line) is given.
    line, rest = first, msg
  end
  if line and s_sub(rest, 1, 1) == '\1' then
    msg = s_sub(rest, 2) .. ' script: ' .. sha .. ', on @user_script:' .. line .. '.'
  elseif line then
    msg = 'ERR ' .. msg .. ' script: ' .. sha .. ', on @user_script:' .. line .. '.'
  end
  return {err = msg}
end
for i = 1, n do
  local db, argc, mode, effect = ARGV[pos], tonumber(ARGV[pos + 1]), ARGV[pos + 2], ARGV[pos + 3]
  pos = pos + 4
  if db ~= cur_db then call('SELECT', db); cur_db = db end
  local last = pos + argc - 1
  local r
  if mode == 'x' or mode == 'q' then
    local a = {unpack(ARGV, pos, last)}
    local name = string.lower(a[1])
    local flush = name == 'flushall' or (name == 'flushdb' and db == '0')
    if flush then save_meta(name == 'flushall') end
    r = redis.pcall(unpack(a))
    if flush then restore_meta() end
    if type(r) ~= 'table' or r.err == nil then
      local reply, k
      effect, reply, k = rewrite(db, a, r, effect)
      if mode == 'q' and r == false then effect = nil end
      if reply then r = reply end
      if effect then ne = ne + (k or 1) end
    else
      effect = nil
    end
  elseif mode == 'e' or mode == 'E' then
    r = run_user(db, pos, last, nil, false, mode == 'E')
    effect = nil
  elseif mode == 't' or mode == 'o' or mode == 'T' or mode == 'O' then
    r = run_user(db, pos + 1, last, ARGV[pos], mode == 'o' or mode == 'O', mode == 'T' or mode == 'O')
    effect = nil
  elseif mode == 'r' then
    local bf = bitfield_pre(pos, last)
    r = redis.pcall(unpack(ARGV, pos, last))
    if bf then r = bitfield_exact(pos, last, r) end
    effect = nil
  elseif s_byte(mode, 1) == 115 then -- 's': a large write, in parts
    r = run_split(pos, last, mode)
    if type(r) == 'table' and r.err then effect = nil else ne = ne + l_tonumber(s_match(mode, '(%d+)$')) end
  elseif mode == 'p' then
    errs_mark()
    effect = nil
  elseif mode == 'n' then
    if errs_moved() then effect = nil else ne = ne + tonumber(ARGV[pos]) end
  else
    local bf = bitfield_pre(pos, last)
    r = redis.pcall(unpack(ARGV, pos, last))
    if bf then r = bitfield_exact(pos, last, r) end
    if type(r) == 'table' and r.err then effect = nil else ne = ne + 1 end
  end
  pos = last + 1
  -- A nil would cut the reply array short (a RESP3 null, a script's nil).
  if r == nil then r = false end
  out[i + 2] = r
  if effect then eff[#eff + 1] = effect end
end
if #eff > 0 then
  if cur_db ~= '0' then call('SELECT', 0); cur_db = '0' end
  out[1], out[2] = number_message(epoch_c, ms, ne, table.concat(eff), maxlen, channel)
end
if cur_db ~= conndb then call('SELECT', conndb) end
return out
`

// applyScript applies a run of consecutive sync messages to a slave, atomically with
// the update of its applied position. It refuses (SYNCGAP) unless the slave is at
// exactly the position the run starts from, which makes applying idempotent and safe
// with several appliers.
//
// A slave being resynced is locked (syncproxy:resync holds the resyncing applier's
// token): only that applier may apply to it.
//
// ARGV: epoch, from-seq, to-seq, n, token, then per effect: db, argc, args... It
// returns the
// number of effects that failed on the slave (a sign of divergence).
const applyScript = `
-- Every call goes through redis.pcall: some servers (miniredis) keep a separate
-- SELECTed DB for call and pcall.
local function call(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then error(r.err) end
  return r
end
local lock = call('GET', 'syncproxy:resync')
if lock and lock ~= ARGV[5] then
  return {err = 'SYNCGAP resync in progress'}
end
local want = ARGV[1] .. ':' .. ARGV[2]
local cur = call('GET', 'syncproxy:applied')
if cur ~= want then
  return {err = 'SYNCGAP ' .. tostring(cur)}
end
local n = tonumber(ARGV[4])
local pos = 6
local curdb = 0
local failed = 0
for i = 1, n do
  local db = tonumber(ARGV[pos])
  local argc = tonumber(ARGV[pos + 1])
  pos = pos + 2
  if db ~= curdb then call('SELECT', db); curdb = db end
  local r = redis.pcall(unpack(ARGV, pos, pos + argc - 1))
  pos = pos + argc
  if type(r) == 'table' and r.err then failed = failed + 1 end
end
if curdb ~= 0 then call('SELECT', 0) end
call('SET', 'syncproxy:applied', ARGV[1] .. ':' .. ARGV[3])
return failed
`

// recoverMeta defines recover_meta(), which restores syncproxy:epoch and
// syncproxy:seq when a maxmemory policy evicted them (allkeys-*): from the
// backlog's last entry, which is the last message, named by its sequence number
// and carrying its epoch. Without that, an evicted epoch would look like a master
// that lost its data (every slave resynced in full), and an evicted counter would
// start again at 1 (XADD refusing the ID after the writes ran). Only when the
// backlog is gone too does the master get a new epoch. Run with DB 0 selected.
const recoverMeta = `
local function recover_meta()
  local e = redis.pcall('GET', 'syncproxy:epoch')
  local s = redis.pcall('GET', 'syncproxy:seq')
  if e and s then return end
  local last = redis.pcall('XREVRANGE', 'syncproxy:backlog', '+', '-', 'COUNT', 1)
  if type(last) ~= 'table' or last.err or not last[1] then return end
  local bseq = string.match(last[1][1], '^(%d+)-')
  local be = string.match(last[1][2][2] or '', '^%*5\r\n%$11\r\nsyncproxy/1\r\n%$%d+\r\n([^\r]*)\r\n:')
  if not e and be then redis.pcall('SET', 'syncproxy:epoch', be) end
  if not s and bseq then redis.pcall('SET', 'syncproxy:seq', bseq) end
end
`

// encodeEffect defines enc(db, t), the sync-message encoding of one effect: the
// command t in DB db, as a RESP array of bulk strings (see message.go).
const encodeEffect = `
local function bulk(s) return '$' .. #s .. '\r\n' .. s .. '\r\n' end
local function enc(db, t)
  local p = {'*', #t + 1, '\r\n', bulk(db)}
  for i = 1, #t do p[#p + 1] = bulk(tostring(t[i])) end
  return table.concat(p)
end
`

// numberMessage defines number_message(epoch_c, ms, n, body, maxlen, channel),
// which gives the sync message of n effects (body, encoded) the next sequence
// number, appends it to the backlog and publishes it; it returns seq and epoch.
// An evicted epoch or counter is restored first (recoverMeta); a master with no
// epoch gets epoch_c-ms, or, when epoch_c is nil, nothing is written (nil). A
// counter behind the backlog's last entry (both evicted, the backlog written
// again since) is moved past it, since XADD would refuse the ID after the writes
// ran. Run with DB 0 selected; it needs recoverMeta.
const numberMessage = `
local function number_message(epoch_c, ms, n, body, maxlen, channel)
  local function c(...)
    local r = redis.pcall(...)
    if type(r) == 'table' and r.err then error(r.err) end
    return r
  end
  local epoch = c('GET', 'syncproxy:epoch')
  if not epoch or c('EXISTS', 'syncproxy:seq') == 0 then
    recover_meta()
    epoch = c('GET', 'syncproxy:epoch')
    -- A counter lost with the backlog cannot go on in the same epoch (its
    -- numbers would come again): a new one starts (bridge.go).
    if epoch and c('EXISTS', 'syncproxy:seq') == 0 then epoch = nil end
  end
  if not epoch then
    -- A new data set (first write ever, or the master lost its data): a new
    -- epoch, unique even when the same proxy made the previous one.
    if not epoch_c then return nil end
    epoch = epoch_c .. '-' .. ms
    c('SET', 'syncproxy:epoch', epoch)
  end
  local seq = c('INCR', 'syncproxy:seq')
  local function msg_of(sseq)
    return '*5\r\n$11\r\nsyncproxy/1\r\n$' .. #epoch .. '\r\n' .. epoch .. '\r\n:' .. sseq .. '\r\n:' .. ms ..
      '\r\n*' .. n .. '\r\n' .. body
  end
  local sseq = string.format('%d', seq)
  local msg = msg_of(sseq)
  local r = redis.pcall('XADD', 'syncproxy:backlog', 'MAXLEN', '~', maxlen, sseq .. '-0', 'm', msg)
  if type(r) == 'table' and r.err then
    local last = c('XREVRANGE', 'syncproxy:backlog', '+', '-', 'COUNT', 1)
    seq = (last[1] and tonumber(string.match(last[1][1], '^(%d+)-')) or 0) + 1
    sseq = string.format('%d', seq)
    c('SET', 'syncproxy:seq', sseq)
    msg = msg_of(sseq)
    c('XADD', 'syncproxy:backlog', 'MAXLEN', '~', maxlen, sseq .. '-0', 'm', msg)
  end
  c('PUBLISH', channel, msg)
  return seq, epoch
end
`

// numberScript numbers the effects of a native group (see WriteGroupNumber),
// which ran in the same transaction before it: it appends them as one message
// to the backlog and publishes it. ARGV: epoch-candidate, backlog-maxlen,
// channel, now (unix ms), conn-db, n, effects. It returns {seq, epoch}.
const numberScript = `redis.pcall('SELECT', 0)` + recoverMeta + numberMessage + `
local seq, epoch = number_message(ARGV[1], ARGV[4], tonumber(ARGV[6]), ARGV[7], ARGV[2], ARGV[3])
if ARGV[5] ~= '0' then redis.pcall('SELECT', ARGV[5]) end
return {seq, epoch}
`

// positionScript returns the master's {epoch, seq}, recovering evicted metadata
// (recoverMeta) and giving a master without any a new epoch (a new or emptied
// data set, or metadata an eviction took whole). An epoch starts with a message
// (without effects), as every other change of the position does: the proxies
// subscribed see where the old epoch ended and the new one began (bridge.go).
// ARGV: epoch-candidate, now (unix ms), backlog-maxlen, channel.
const positionScript = `redis.pcall('SELECT', 0)` + recoverMeta + numberMessage + `
recover_meta()
if not redis.call('GET', 'syncproxy:epoch') or redis.call('EXISTS', 'syncproxy:seq') == 0 then
  number_message(ARGV[1], ARGV[2], 0, '', ARGV[3], ARGV[4])
end
return {redis.call('GET', 'syncproxy:epoch'), redis.call('GET', 'syncproxy:seq') or '0'}
`

// copyScript reads keys of one DB for a full resync, atomically with the master's
// sequence number. ARGV: db, keys... It returns {seq, dump1, pexpiretime1, ...},
// dump nil for a missing key.
const copyScript = `
local function call(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then error(r.err) end
  return r
end
call('SELECT', 0)
local out = {call('GET', 'syncproxy:seq') or '0'}
call('SELECT', ARGV[1])
for i = 2, #ARGV do
  local d = call('DUMP', ARGV[i])
  out[#out + 1] = d
  if d then out[#out + 1] = call('PEXPIRETIME', ARGV[i]) else out[#out + 1] = -2 end
end
call('SELECT', 0)
return out
`

// Guard is what client scripts may not do: the proxy's own refusals, enforced
// inside the scripts it composes (UserScript), where a script's commands run.
type Guard struct {
	// Spec has a line "\n<name> <flags> <first> <last> <step> <arity>" per
	// command and subcommand ("object|encoding"), with the command table's
	// legacy key positions and arity. Flags: w a write (its effect is recorded; on a container, some
	// subcommand writes), r not a write but refused in a read-only script as
	// one (Redis' may-replicate: PUBLISH), c a container, n noscript, m keys
	// anywhere (every argument is checked), s SORT's keys, d denied, - none. A
	// command not listed is checked as m.
	Spec string
	// The error replies: a reserved key, PUBLISH to the sync channel, SWAPDB of
	// DB 0, and a denied command (DeniedPrefix + name + DeniedSuffix).
	ReservedKey, SyncChannel, SwapDB0, DeniedPrefix, DeniedSuffix string
}

// UserScript composes the script that runs a client's script body (EVAL) with its
// writes replicated as effects and g enforced. body must compile alone as a
// chunk (SCRIPT LOAD it first): it is inserted as a function's body.
//
// A body starting with a #! line (Redis 7's flags, e.g. "#!lua flags=no-writes")
// keeps that line as the composed script's first, so that the server applies its
// flags to the whole call (a no-writes script cannot write, EVAL_RO of one
// without no-writes is refused, OOM), and the client's second line is the
// composed script's second, as Redis numbers it.
func UserScript(body string, g Guard) Script {
	var b strings.Builder
	code := body
	if strings.HasPrefix(body, "#!") {
		line, rest, _ := strings.Cut(body, "\n")
		b.WriteString(line + "\n")
		code = rest
	}
	b.WriteString("local __user = function(KEYS, ARGV, redis, _G, loadstring, load) ")
	b.WriteString(code)
	sum := sha1.Sum([]byte(body))
	if code != body {
		b.WriteString("\nend\nlocal __first = '2'")
	} else {
		b.WriteString("\nend\nlocal __first = '1'")
	}
	b.WriteString("\nlocal __sha = '")
	b.WriteString(hex.EncodeToString(sum[:]))
	b.WriteString("'\nlocal __spec = ")
	b.WriteString(LuaQuote(g.Spec))
	b.WriteString("\nlocal __denied = {")
	b.WriteString(LuaQuote(g.DeniedPrefix) + ", " + LuaQuote(g.DeniedSuffix))
	b.WriteString("}\nlocal __msg_key, __msg_channel, __msg_swapdb = ")
	b.WriteString(LuaQuote(g.ReservedKey) + ", " + LuaQuote(g.SyncChannel) + ", " + LuaQuote(g.SwapDB0))
	b.WriteString("\n")
	b.WriteString(masterBody)
	return newScript(b.String())
}

// TxScript composes the script that runs a transaction holding client scripts
// (ModeTxScript): the master script with g enforced on the scripts.
func TxScript(g Guard) Script { return UserScript("", g) }

// LuaQuote returns s as a single-quoted Lua string literal.
func LuaQuote(s string) string {
	var b strings.Builder
	b.WriteByte('\'')
	for _, c := range []byte(s) {
		switch {
		case c == '\'' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c > '~':
			// Three digits: a digit after the escape must not extend it.
			b.WriteString(fmt.Sprintf("\\%03d", c))
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// Script is a Lua script and its SHA1, for EVALSHA.
type Script struct {
	Body string
	SHA  string
}

func newScript(body string) Script {
	sum := sha1.Sum([]byte(body))
	return Script{Body: body, SHA: hex.EncodeToString(sum[:])}
}

// MasterScript returns the script that client writes run in on the master.
func MasterScript() Script { return newScript(masterScript) }
