package replicate

import "bytes"

// BITFIELD's replies are integers of up to 64 bits, which a Lua number (a
// double) does not hold exactly beyond 2^53: run in the master script, a field
// of 54 bits or more would come back rounded. When a BITFIELD or BITFIELD_RO
// names such a field, the script copies the key first (bitfield_pre), runs the
// command as it is (Redis checks it whole and applies it), and, when a reply
// did not fit, runs its operations again one by one on the copy, reading each
// wide field's bits with GETRANGE and writing its value in decimal as the
// status "\x01I<digits>" (bitfield_exact); FixCallReply makes integers of them.

// bitfieldCopy is the key the script copies a BITFIELD's key to, and deletes
// in the same script.
const bitfieldCopy = KeyPrefix + "bitfield"

// bitfieldExact defines bitfield_pre and bitfield_exact (see above).
const bitfieldExact = `
local BF_COPY = '` + bitfieldCopy + `'
-- bf_width is the width of a BITFIELD type (i1..i64, u1..u63), or nil.
local function bf_width(t)
  local w = string.match(t, '^[iIuU](%d+)$')
  return w and tonumber(w)
end
-- bitfield_pre copies the key of a BITFIELD naming a field of 54 bits or more,
-- and reports whether it did.
local function bitfield_pre(from, to)
  local name = string.lower(ARGV[from])
  if name ~= 'bitfield' and name ~= 'bitfield_ro' then return false end
  local wide = false
  for i = from + 2, to do
    local w = bf_width(ARGV[i])
    if w and w >= 54 then wide = true break end
  end
  if not wide then return false end
  redis.pcall('DEL', BF_COPY)
  local ok = redis.pcall('COPY', ARGV[from + 1], BF_COPY)
  return type(ok) == 'number'
end
-- bf_read returns the field's value on the copy, exactly, as "\1I<digits>".
local function bf_read(t, off)
  local signed, w = string.lower(string.sub(t, 1, 1)) == 'i', bf_width(t)
  local o
  if string.sub(off, 1, 1) == '#' then o = tonumber(string.sub(off, 2)) * w else o = tonumber(off) end
  local b0 = math.floor(o / 8)
  local s = redis.pcall('GETRANGE', BF_COPY, b0, math.floor((o + w - 1) / 8))
  if type(s) ~= 'string' then s = '' end
  local bits = {}
  for j = 0, w - 1 do
    local p = o + j
    local byte = string.byte(s, math.floor(p / 8) - b0 + 1) or 0
    bits[j + 1] = math.floor(byte / 2 ^ (7 - p % 8)) % 2
  end
  local neg = signed and bits[1] == 1
  if neg then -- the magnitude: the bits inverted, plus one
    for j = 1, w do bits[j] = 1 - bits[j] end
    for j = w, 1, -1 do
      if bits[j] == 1 then bits[j] = 0 else bits[j] = 1 break end
    end
  end
  local d = {0} -- base 10^7 digits, least significant first
  for j = 1, w do
    local carry = bits[j]
    for m = 1, #d do
      local x = d[m] * 2 + carry
      d[m], carry = x % 10000000, math.floor(x / 10000000)
    end
    if carry > 0 then d[#d + 1] = carry end
  end
  local str = string.format('%d', d[#d])
  for m = #d - 1, 1, -1 do str = str .. string.format('%07d', d[m]) end
  if neg then str = '-' .. str end
  return {ok = '\1I' .. str}
end
-- bitfield_exact replaces the replies of r that a Lua number rounded with the
-- exact values, from the copy bitfield_pre made, which it then deletes.
local function bitfield_exact(from, to, r)
  local rounded = false
  if type(r) == 'table' and r.err == nil then
    for k = 1, #r do
      if type(r[k]) == 'number' and (r[k] >= BIG or r[k] <= -BIG) then rounded = true end
    end
  end
  local i, k, ovf = from + 2, 1, 'WRAP'
  while rounded and i <= to do
    local op = string.upper(ARGV[i])
    if op == 'OVERFLOW' then
      ovf, i = ARGV[i + 1], i + 2
    elseif op == 'GET' or op == 'SET' or op == 'INCRBY' then
      local t, off, exact = ARGV[i + 1], ARGV[i + 2], type(r[k]) == 'number' and (r[k] >= BIG or r[k] <= -BIG)
      if exact and op ~= 'INCRBY' then r[k] = bf_read(t, off) end
      if op ~= 'GET' then
        redis.pcall('BITFIELD', BF_COPY, 'OVERFLOW', ovf, op, t, off, ARGV[i + 3])
        i = i + 1
      end
      if exact and op == 'INCRBY' then r[k] = bf_read(t, off) end
      i, k = i + 3, k + 1
    else
      break
    end
  end
  redis.pcall('DEL', BF_COPY)
  return r
end
`

// fixNestedBigInts turns the "\x01I<digits>" statuses inside an array reply
// (BITFIELD's) into integers; other frames are kept as they are.
func fixNestedBigInts(reply []byte) []byte {
	if len(reply) == 0 || reply[0] != '*' || !bytes.Contains(reply, []byte("\r\n+\x01I")) {
		return reply
	}
	out := make([]byte, 0, len(reply))
	if n := copyFrame(&out, reply, 0); n != len(reply) {
		return reply // not one well-formed frame: left alone
	}
	return out
}

// copyFrame appends the frame at b[i:] to out, big-integer statuses as
// integers, and returns the index after it (-1 when malformed).
func copyFrame(out *[]byte, b []byte, i int) int {
	if i < 0 || i >= len(b) {
		return -1
	}
	end := bytes.Index(b[i:], []byte("\r\n"))
	if end < 0 {
		return -1
	}
	end += i + 2
	line := b[i:end]
	switch b[i] {
	case '+':
		if len(line) > 3 && line[1] == 1 && line[2] == 'I' {
			*out = append(append(*out, ':'), line[3:]...)
			return end
		}
	case '$':
		n, ok := parseLen(line[1 : len(line)-2])
		if ok && n >= 0 {
			if end+n+2 > len(b) {
				return -1
			}
			*out = append(*out, b[i:end+n+2]...)
			return end + n + 2
		}
	case '*':
		n, ok := parseLen(line[1 : len(line)-2])
		*out = append(*out, line...)
		for j := 0; ok && j < n && end >= 0; j++ {
			end = copyFrame(out, b, end)
		}
		return end
	}
	*out = append(*out, line...)
	return end
}

// parseLen parses a RESP length (-1 for null).
func parseLen(s []byte) (int, bool) {
	if string(s) == "-1" {
		return -1, true
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' || n > 1<<30 {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, len(s) > 0
}
