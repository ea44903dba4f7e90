package replicate

import (
	"crypto/sha1"
	"encoding/hex"
)

// Metadata keys kept on the backends, all in DB 0. Clients may not write them.
const (
	KeyPrefix  = "syncproxy:"
	KeyEpoch   = "syncproxy:epoch"   // master: replication id (random hex)
	KeySeq     = "syncproxy:seq"     // master: last sequence number assigned
	KeyBacklog = "syncproxy:backlog" // master: stream of sync messages, ID <seq>-0
	KeyApplied = "syncproxy:applied" // slave: "<epoch>:<seq>" of the last applied message
)

// MaxScriptArgs bounds the arguments of one replicated write: Lua's unpack() cannot
// pass more than about 8000 values to redis.call.
const MaxScriptArgs = 7900

// masterScript runs a group of client writes on the master and, atomically with
// them, assigns the group a sequence number, appends the sync message to the
// backlog and publishes it.
//
// ARGV: epoch-candidate, backlog-maxlen, channel, now (unix ms, the proxy's clock:
// TIME would cost a call per script), conn-db, n, then per command:
// db, argc, effect, args... where effect is the command's sync-message encoding
// (the proxy has the command's RESP bytes already, so Lua need not build it). It
// returns {seq, reply1, ..., replyN}; seq is 0 when no command
// had an effect (all failed).
const masterScript = `
-- Every call goes through redis.pcall: some servers (miniredis) keep a separate
-- SELECTed DB for call and pcall.
local function call(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then error(r.err) end
  return r
end
local epoch_c, maxlen, channel, ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local conndb = tonumber(ARGV[5])
local n = tonumber(ARGV[6])
local pos = 7
local cur = conndb
local out = {0}
local eff = {}
local function bulk(s) return '$' .. #s .. '\r\n' .. s .. '\r\n' end
for i = 1, n do
  local db = tonumber(ARGV[pos])
  local argc = tonumber(ARGV[pos + 1])
  local effect = ARGV[pos + 2]
  pos = pos + 3
  if db ~= cur then call('SELECT', db); cur = db end
  local r = redis.pcall(unpack(ARGV, pos, pos + argc - 1))
  pos = pos + argc
  out[i + 1] = r
  if type(r) ~= 'table' or r.err == nil then
    eff[#eff + 1] = effect
  end
end
if #eff > 0 then
  if cur ~= 0 then call('SELECT', 0); cur = 0 end
  local epoch = call('GET', 'syncproxy:epoch')
  if not epoch then
    epoch = epoch_c
    call('SET', 'syncproxy:epoch', epoch)
  end
  local seq = call('INCR', 'syncproxy:seq')
  local sseq = string.format('%d', seq)
  local msg = '*5\r\n$11\r\nsyncproxy/1\r\n' .. bulk(epoch) .. ':' .. sseq .. '\r\n:' .. ms ..
    '\r\n*' .. #eff .. '\r\n' .. table.concat(eff)
  call('XADD', 'syncproxy:backlog', 'MAXLEN', '~', maxlen, sseq .. '-0', 'm', msg)
  call('PUBLISH', channel, msg)
  out[1] = seq
end
if cur ~= conndb then call('SELECT', conndb) end
return out
`

// applyScript applies a run of consecutive sync messages to a slave, atomically with
// the update of its applied position. It refuses (SYNCGAP) unless the slave is at
// exactly the position the run starts from, which makes applying idempotent and safe
// with several appliers.
//
// ARGV: epoch, from-seq, to-seq, n, then per effect: db, argc, args... It returns the
// number of effects that failed on the slave (a sign of divergence).
const applyScript = `
-- Every call goes through redis.pcall: some servers (miniredis) keep a separate
-- SELECTed DB for call and pcall.
local function call(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then error(r.err) end
  return r
end
local want = ARGV[1] .. ':' .. ARGV[2]
local cur = call('GET', 'syncproxy:applied')
if cur ~= want then
  return {err = 'SYNCGAP ' .. tostring(cur)}
end
local n = tonumber(ARGV[4])
local pos = 5
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

// ApplyScript returns the script that applies sync messages on a slave.
func ApplyScript() Script { return newScript(applyScript) }
