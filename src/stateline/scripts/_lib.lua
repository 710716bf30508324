-- Shared helpers: each script of this folder gets the ones it uses prepended (plan.py).
-- Every script works on the two keys of one thread, which share one hash tag:
--   KEYS[1] = D, a hash of records:
--     c:<ns>:<cid>           checkpoint record
--     b:<ns>:<ch>:<ver>      channel value: 'v<bytes>', or 'L<n>:<log>[|<kind>]' (a list: the
--                            first n digests of a log)
--     l:<ns>:<ch>:<id>       log header: its length in digests, and for a fork the log it
--                            shares a prefix with ('<len> <base> <n>'); its own digests (16
--                            bytes each) are in chunks '<log>#<j>' of CHUNK, appended in place
--     t:<ns>:<ch>            the id of the channel's newest log (the one a full list extends)
--     e:<digest>             a list item
--     w:<ns>:<cid>           the checkpoint's pending writes, packed (format 2), at most
--                            PACK bytes: '<n>\n' ('<n>+\n' when writes of the checkpoint
--                            may be in fields of their own: one did not fit, or the
--                            checkpoint was in format 1 or not stored when its first write
--                            came), n bytes of heads '<task> <idx> <length>\n', then the
--                            values in the same order
--     w:<ns>:<cid>:<task>:<idx>  a pending write in a field of its own: one that did not fit
--                            the packed field ('+<value>'), or one stored in format 1
--                            ('<value>'). A value is a record, or 'W<n>:<digests><record>'
--     nw                     how many writes are packed (the others have index members)
--     a:<ns>:<alias>         the cid an adapter's own id stands for
--     n:<field>              reference count of a log, or of a b: or e: field referenced more
--                            than once (a stored value or item without one has one); at 0
--                            the field goes
--     k:<log>                '<count> <upto>': logs that share the first digests of this one
--     v                      the thread's write generation (copies check it did not move)
--   KEYS[2] = I, a sorted set (all scores 0, ordered by member bytes):
--     c:<ns>:<cid>, o:<cid> <ns> (the other namespaces' checkpoints by id: the root's are
--     its c:: members; format 1 had them for the root too), w:<ns>:<cid>:<task>:<idx> (writes
--     in fields of their own), p:<ns>:<cid> (packed writes whose checkpoint is not stored),
--     r:<run>:<ns>:<cid>, s:<ns> (namespaces holding checkpoints or writes),
--     g:<log> (logs nobody refers to, whose items collect() releases a few at a time)
-- Components are percent-encoded by the client, so ':', ' ' and '#' never occur inside them.
-- No helper does work that grows with the thread: each touches what one call adds or drops.
local D, I = KEYS[1], KEYS[2]
local HI = '\255'
local CHUNK = 64
local PACK = 4096  -- a packed writes field stays small: each put_writes rewrites it whole

-- A checkpoint record starts with a 4-byte length and a msgpack array the scripts read:
-- {format (1 or 2), parent cid, {value fields}, run, {DeltaChannel value prefixes}, alias}.
-- A record that is not one (damaged) fails the call with STATELINE_DAMAGED, which the
-- client reports as StoredDataError naming the thread and the field `f`.
local function meta(rec, f)
  local ok, _, m = pcall(cmsgpack.unpack_one, rec, 4)
  if ok and type(m) == 'table' and (m[1] == 1 or m[1] == 2) and type(m[2]) == 'string' and type(m[3]) == 'table'
      and type(m[4]) == 'string' and type(m[5]) == 'table' then
    local good = true
    for _, ref in ipairs(m[3]) do
      if type(ref) ~= 'string' then good = false end
    end
    if good then return m end
  end
  if ok and type(m) == 'table' and type(m[1]) == 'number' and m[1] > 2 then
    error({err = 'STATELINE_DAMAGED ' .. D .. ' ' .. (f or '?') .. ' format ' .. m[1]})
  end
  error({err = 'STATELINE_DAMAGED ' .. D .. ' ' .. (f or '?')})
end

-- a < b by bytes, as the index orders members (Lua's own '<' follows the server's locale).
local function bytes_before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local function head_member(ns)
  return redis.call('ZREVRANGEBYLEX', I, '[c:' .. ns .. ':' .. HI, '[c:' .. ns .. ':', 'LIMIT', 0, 1)[1]
end

-- The checkpoint id an id stands for: itself, or the checkpoint that has it as alias.
local function resolve(ns, id)
  if id == '' or redis.call('HEXISTS', D, 'c:' .. ns .. ':' .. id) == 1 then return id end
  local cid = redis.call('HGET', D, 'a:' .. ns .. ':' .. id)
  if cid and redis.call('HEXISTS', D, 'c:' .. ns .. ':' .. cid) == 1 then return cid end
  return id
end

local function split_member(m)  -- 'c:<ns>:<cid>' -> ns, cid
  local ns, cid = string.match(m, '^c:([^:]*):(.*)$')
  return ns, cid
end

local function by_prefix(prefix, limit)
  if limit then
    return redis.call('ZRANGEBYLEX', I, '[' .. prefix, '[' .. prefix .. HI, 'LIMIT', 0, limit)
  end
  return redis.call('ZRANGEBYLEX', I, '[' .. prefix, '[' .. prefix .. HI)
end

-- HMGET of any number of fields (unpack() of a long table overflows Lua's C stack);
-- a missing field is false.
local function hmget(fields)
  if #fields <= 1000 then
    if #fields == 0 then return {} end
    return redis.call('HMGET', D, unpack(fields))
  end
  local out = {}
  for i = 1, #fields, 1000 do
    local part = redis.call('HMGET', D, unpack(fields, i, math.min(i + 999, #fields)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end

-- A command on one key with any number of arguments (a flat table), sent in chunks that
-- unpack() can take; chunks hold an even number, so field/value and score/member pairs
-- stay together.
local function call_chunked(command, key, args)
  for i = 1, #args, 500 do
    redis.call(command, key, unpack(args, i, math.min(i + 499, #args)))
  end
end

-- A log's header: '<len>', or '<len> <base> <base_n>' for a log whose first base_n digests
-- are those of log <base> (a fork of a list shares its prefix; the log holds a reference to
-- its base). The log's own digests, positions base_n..len-1, are in chunks '<log>#<j>' of
-- CHUNK, numbered from base_n. Returns len, base, base_n (nil if the log is not stored).
local function log_head(log)
  local h = redis.call('HGET', D, log)
  if not h then return nil end
  local len, base, base_n = string.match(h, '^(%d+) ?([^ ]*) ?(%d*)$')
  return tonumber(len), base ~= '' and base or nil, tonumber(base_n) or 0
end

local function log_set_head(log, len, base, base_n)
  redis.call('HSET', D, log, base and (len .. ' ' .. base .. ' ' .. base_n) or len)
end

-- Digests [from, to) (0-based) of a log, or nil if a part of it is missing.
local function log_slice(log, from, to)
  if to <= from then return '' end
  local _, base, base_n = log_head(log)
  if base_n == nil then return nil end
  local parts = {}
  if from < base_n then
    parts[1] = log_slice(base, from, math.min(to, base_n))
    if not parts[1] then return nil end
  end
  if to > base_n then
    local own_from, own_to = math.max(from, base_n) - base_n, to - base_n
    local first = math.floor(own_from / CHUNK)
    local fields = {}
    for j = first, math.floor((own_to - 1) / CHUNK) do fields[#fields + 1] = log .. '#' .. j end
    local chunks = hmget(fields)
    for j = 1, #chunks do
      if not chunks[j] then return nil end
    end
    local skip = 16 * (own_from - first * CHUNK)
    parts[#parts + 1] = string.sub(table.concat(chunks), skip + 1, skip + 16 * (own_to - own_from))
  end
  return table.concat(parts)
end

local function log_digests(log, n)
  return log_slice(log, 0, n)
end

-- How many leading digests two digest strings share (compared 64 digests at a time).
local function common_prefix(a, b)
  local n, block = math.min(#a, #b), 16 * CHUNK
  local k = 0
  while k + block <= n and string.sub(a, k + 1, k + block) == string.sub(b, k + 1, k + block) do k = k + block end
  while k + 16 <= n and string.sub(a, k + 1, k + 16) == string.sub(b, k + 1, k + 16) do k = k + 16 end
  return k / 16
end

local function counted(f)
  return redis.call('HEXISTS', D, 'n:' .. f) == 1
end

-- One more reference to a stored field. A log counts its references in 'n:<log>'; a value
-- or an item is stored with its first reference, and 'n:<field>' holds the count from the
-- second on (most values and many items never have a second: no count field for them).
local function hold(f)
  if string.sub(f, 1, 2) == 'l:' or redis.call('HSETNX', D, 'n:' .. f, 2) == 0 then
    redis.call('HINCRBY', D, 'n:' .. f, 1)
  end
end

-- An item referenced once more: stored from `sent` if it is new (its first reference).
local function add_item(d, sent)
  if redis.call('HEXISTS', D, 'e:' .. d) == 1 then
    hold('e:' .. d)
  else
    redis.call('HSET', D, 'e:' .. d, sent[d])
  end
end

-- The forks of a log: 'k:<log>' = '<count> <longest prefix a fork shares>', or nil.
local function forks_of(log)
  local k = redis.call('HGET', D, 'k:' .. log)
  if not k then return nil end
  local count, upto = string.match(k, '^(%d+) (%d+)$')
  return tonumber(count), tonumber(upto)
end

-- A new log shares the first `upto` digests of `base`.
local function hold_fork(base, upto)
  local count, most = forks_of(base)
  redis.call('HSET', D, 'k:' .. base, ((count or 0) + 1) .. ' ' .. math.max(most or 0, upto))
end

-- Appends digests to a log of length len, rewriting only its last chunk; each digest holds
-- its item (stored from `sent` if new). Returns the new length.
local function log_append(log, len, digests, sent)
  local _, base, base_n = log_head(log)
  local n, pos, i, fields = #digests / 16, len - base_n, 1, {}
  while i <= n do
    local j = math.floor(pos / CHUNK)
    local take = math.min(CHUNK - pos % CHUNK, n - i + 1)
    local part = string.sub(digests, 16 * i - 15, 16 * (i + take - 1))
    if pos % CHUNK ~= 0 then part = (redis.call('HGET', D, log .. '#' .. j) or '') .. part end
    fields[#fields + 1] = log .. '#' .. j
    fields[#fields + 1] = part
    pos, i = pos + take, i + take
  end
  call_chunked('HSET', D, fields)
  log_set_head(log, base_n + pos, base, base_n)
  for k = 1, #digests, 16 do add_item(string.sub(digests, k, k + 15), sent) end
  return base_n + pos
end

-- Starts log `log` as the first base_n digests of `base` (none: base nil) followed by
-- `digests`; the new log holds its base and its own items.
local function log_start(log, base, base_n, digests, sent)
  if base and base_n > 0 then
    hold_fork(base, base_n)
    log_set_head(log, base_n, base, base_n)
  else
    log_set_head(log, 0)
  end
  log_append(log, base and base_n or 0, digests, sent)
end

-- A list value 'L<n>:<log>[|<kind>]' -> n, log, kind
local function list_parts(v)
  local n, log, kind = string.match(v, '^L(%d+):([^|]*)|?(.*)$')
  return tonumber(n), log, kind
end

-- Drops one reference to a b:, l: or e: field, and the field itself once nobody refers to
-- it. A log nobody refers to is queued (g:) for collect(), which releases its items a bounded
-- number per call: all of them, or while forks share its prefix, those beyond it.
local function release(f)
  local kind = string.sub(f, 1, 2)
  local left = redis.call('HINCRBY', D, 'n:' .. f, -1)  -- (a value's or item's first is implicit)
  if kind == 'l:' and left > 0 or kind ~= 'l:' and left >= 2 then return end
  redis.call('HDEL', D, 'n:' .. f)
  if kind ~= 'l:' and left == 1 then return end  -- back to one reference: implicit again
  if kind == 'b:' then
    local v = redis.call('HGET', D, f)
    redis.call('HDEL', D, f)
    if v and string.byte(v, 1) == 76 then  -- 76 = 'L'
      local _, log = list_parts(v)
      release(log)
    end
  elseif kind == 'l:' then
    local base, id = string.match(f, '^l:([^:]*:[^:]*):(.*)$')
    if redis.call('HGET', D, 't:' .. base) == id then redis.call('HDEL', D, 't:' .. base) end
    redis.call('ZADD', I, 0, 'g:' .. f)
  else
    redis.call('HDEL', D, f)
  end
end

-- A fork of `base` went: the base goes too once nothing else refers to it.
local function release_fork(base)
  local count, upto = forks_of(base)
  if count and count > 1 then
    redis.call('HSET', D, 'k:' .. base, (count - 1) .. ' ' .. upto)
    return
  end
  redis.call('HDEL', D, 'k:' .. base)
  if not counted(base) then redis.call('ZADD', I, 0, 'g:' .. base) end
end

-- Releases the items of logs nobody refers to (their own digests, last first), at most
-- `budget` of them; a log goes whole (and lets go of its base) unless forks share its
-- prefix, which then stays. Returns true when nothing is left to do.
local function collect(budget)
  for _, m in ipairs(by_prefix('g:', 4)) do
    local log = string.sub(m, 3)
    local len, base, base_n = log_head(log)
    len, base_n = len or 0, base_n or 0
    local _, shared = forks_of(log)
    local keep = math.max(base_n, shared or 0)
    while len > keep and budget > 0 do
      local j = math.floor((len - base_n - 1) / CHUNK)
      local first = base_n + j * CHUNK  -- the chunk's first position
      local chunk = redis.call('HGET', D, log .. '#' .. j) or ''
      local cut = math.max(keep - first, 0)  -- digests of the chunk that stay
      for k = 16 * cut + 1, #chunk, 16 do release('e:' .. string.sub(chunk, k, k + 15)) end
      if cut > 0 then
        redis.call('HSET', D, log .. '#' .. j, string.sub(chunk, 1, 16 * cut))
      else
        redis.call('HDEL', D, log .. '#' .. j)
      end
      budget, len = budget - math.max(1, #chunk / 16 - cut), first + cut
    end
    if len > keep then
      log_set_head(log, len, base, base_n)
      return false
    end
    redis.call('ZREM', I, m)
    if shared then
      log_set_head(log, len, base, base_n)  -- what its forks share stays, until they go
    else
      redis.call('HDEL', D, log)
      if base then release_fork(base) end
    end
  end
  return #by_prefix('g:', 1) == 0
end

-- A write whose value is a list of items stored by digest: 'W<n>:<16n digest bytes><record>'
-- (after a '+' in a field of its own, format 2).
local function write_parts(v)
  if not v then return nil end
  local at = string.byte(v, 1) == 43 and 2 or 1  -- 43 = '+'
  if string.byte(v, at) ~= 87 then return nil end  -- 87 = 'W'
  local colon = string.find(v, ':', at + 1, true)
  local n = colon and tonumber(string.sub(v, at + 1, colon - 1))
  if not n then return nil end  -- (damaged: the client names it)
  return string.sub(v, colon + 1, colon + 16 * n), string.sub(v, colon + 16 * n + 1)
end

local function release_write(v)
  local digests = write_parts(v)
  if digests then
    for k = 1, #digests, 16 do release('e:' .. string.sub(digests, k, k + 15)) end
  end
end

-- What a reader gets for a value field: its bytes, or for a list {kind, n, log}, whose
-- digests the reply carries once per log (see reply_logs) and whose items the client
-- fetches (or has). `logs`: log -> longest prefix wanted.
local function read_value(field, logs)
  local v = redis.call('HGET', D, field)
  if not v or string.byte(v, 1) ~= 76 then return v end
  local n, log, kind = list_parts(v)
  -- (damaged: the raw bytes, which the client names; never a walk over a made-up length)
  if not n or log == '' or n > (log_head(log) or -1) then return v end
  if (logs[log] or -1) < n then logs[log] = n end
  return {kind, n, log}
end

-- {log, digests, ...} for the logs a reply refers to; for a log the client knows the first
-- m digests of (`known`: log -> m), {m, the digests after them} instead (a warm read does not
-- grow with the list).
local function reply_logs(logs, known)
  local out = {}
  for log, n in pairs(logs) do
    out[#out + 1] = log
    local m = known and known[log]
    if m and m <= n then
      local after = log_slice(log, m, n)
      out[#out + 1] = after and {m, after} or false
    else
      out[#out + 1] = log_digests(log, n) or false
    end
  end
  return out
end

-- A packed writes field (its value `v`, or nil) as its heads, after a '\n' (so that
-- string.find('\n<task> <idx> ', plain) finds a write without reading the values), where
-- its values start in `v`, and whether writes of the checkpoint may be in fields of their own.
-- A damaged one fails the call with STATELINE_DAMAGED naming the field.
local function packed_parts(field, v)
  if not v then return '\n', 1, false end
  local n, elsewhere, at = string.match(v, '^(%d+)(%+?)\n()')
  if not n or at + n > #v + 1 then error({err = 'STATELINE_DAMAGED ' .. D .. ' ' .. field}) end
  return '\n' .. string.sub(v, at, at + n - 1), at + n, elsewhere == '+'
end

-- The entries {task, idx, value} of a packed writes field.
local function packed_writes(field, v)
  local heads, at = packed_parts(field, v)
  local values = v and string.sub(v, at) or ''
  local out, pos = {}, 1
  for task, idx, len in string.gmatch(heads, '([^ \n]+) (%-?%d+) (%d+)\n') do
    out[#out + 1] = {task, idx, string.sub(values, pos, pos + len - 1)}
    pos = pos + len
  end
  if pos ~= #values + 1 then error({err = 'STATELINE_DAMAGED ' .. D .. ' ' .. field}) end
  return out
end

-- A packed writes field: the heads and values of packed_parts, then `entries`.
local function pack_writes(heads, values, elsewhere, entries)
  local h, v = {string.sub(heads, 2)}, {values}
  for _, e in ipairs(entries) do
    if e[3] then  -- (false: moved to a field of its own)
      h[#h + 1] = e[1] .. ' ' .. e[2] .. ' ' .. #e[3] .. '\n'
      v[#v + 1] = e[3]
    end
  end
  local head = table.concat(h)
  return #head .. (elsewhere and '+' or '') .. '\n' .. head .. table.concat(v)
end

-- A checkpoint's pending writes as {name, value, ...}: the packed ones named
-- 'w:<ns>:<cid>:<task>:<idx>' with their value after a '+' (format 2, as in a field of its
-- own), then those in fields of their own (false: gone meanwhile).
local function writes_of(ns, cid)
  local packed, out = 'w:' .. ns .. ':' .. cid, {}
  for _, e in ipairs(packed_writes(packed, redis.call('HGET', D, packed))) do
    out[#out + 1] = packed .. ':' .. e[1] .. ':' .. e[2]
    out[#out + 1] = '+' .. e[3]
  end
  local own = by_prefix(packed .. ':')
  local values = hmget(own)
  for i = 1, #own do
    out[#out + 1] = own[i]
    out[#out + 1] = values[i]
  end
  return out
end

-- Drops the packed writes of a checkpoint (releasing their items). How many went.
local function drop_packed(ns, cid)
  local packed = 'w:' .. ns .. ':' .. cid
  local v = redis.call('HGET', D, packed)
  -- (damaged: it goes all the same, and the items it referred to stay until the thread goes)
  local ok, entries = pcall(function() return packed_writes(packed, v) end)
  if ok then
    for _, e in ipairs(entries) do release_write(e[3]) end  -- (those of their own go apart)
    if #entries > 0 then redis.call('HINCRBY', D, 'nw', -#entries) end
  end
  if v then redis.call('HDEL', D, packed) end
  redis.call('ZREM', I, 'p:' .. ns .. ':' .. cid)
  return ok and #entries or 0
end

-- {ns, cid, record, {values by ref}, {writes}} for one stored checkpoint, or nil. With
-- `bare`, only {ns, cid, record} (a reader that filters on metadata first).
local function load(ns, cid, logs, bare)
  local rec = redis.call('HGET', D, 'c:' .. ns .. ':' .. cid)
  if not rec then return nil end
  if bare then return {ns, cid, rec} end
  local refs = meta(rec, 'c:' .. ns .. ':' .. cid)[3]
  local values = {}
  for i = 1, #refs do values[i] = read_value(refs[i], logs) or false end
  return {ns, cid, rec, values, writes_of(ns, cid)}
end

-- The thread's keys must come and go together: one without the other is a thread that
-- lost keys (evicted), which no reader may take for an empty one.
local function check_whole()
  local d, i = redis.call('EXISTS', D), redis.call('EXISTS', I)
  if d ~= i then return redis.error_reply('STATELINE_PARTIAL ' .. (d == 1 and I or D) .. ' is missing (evicted?)') end
end

local function expire(ttl)
  if ttl > 0 then
    redis.call('PEXPIRE', D, ttl)
    redis.call('PEXPIRE', I, ttl)
  end
end

-- Removes one checkpoint: its record, index entries, alias and pending writes, and its
-- references to values. 1 if it was stored.
local function drop_checkpoint(ns, cid)
  local f = 'c:' .. ns .. ':' .. cid
  local rec = redis.call('HGET', D, f)
  if not rec then return 0 end
  local m = meta(rec)
  local run, alias = m[4], m[6] or ''
  if alias ~= '' and redis.call('HGET', D, 'a:' .. ns .. ':' .. alias) == cid then
    redis.call('HDEL', D, 'a:' .. ns .. ':' .. alias)
  end
  if run ~= '' then redis.call('ZREM', I, 'r:' .. run .. ':' .. ns .. ':' .. cid) end
  redis.call('HDEL', D, f)
  redis.call('ZREM', I, f, 'o:' .. cid .. ' ' .. ns)
  for _, ref in ipairs(m[3]) do release(ref) end
  drop_packed(ns, cid)
  local writes = by_prefix('w:' .. ns .. ':' .. cid .. ':')
  local values = hmget(writes)
  for i = 1, #values do release_write(values[i]) end
  call_chunked('HDEL', D, writes)
  call_chunked('ZREM', I, writes)
  return 1
end

-- Drops writes of namespace `ns` below checkpoint id `below` (a member bound without its
-- kind: '(<ns>:<cid>' or '[<ns>:<cid>:<HI>') whose checkpoint is not stored (late writes,
-- or writes of a checkpoint that never came): in fields of their own (w: members), then
-- packed (p: members), looking at `budget` members at most, after member `after` (nil:
-- from the first). Returns how many went, whether both ranges are done, and the member to
-- go on after (those of stored checkpoints stay, and a caller must get past them).
local function drop_orphan_writes(ns, below, budget, after)
  local function range(kind, from)
    local bound = string.sub(below, 1, 1) .. kind .. string.sub(below, 2)
    return redis.call('ZRANGEBYLEX', I, from and ('(' .. from) or ('[' .. kind .. ns .. ':'), bound, 'LIMIT', 0, budget)
  end
  local went = 0
  if not after or string.sub(after, 1, 2) == 'w:' then
    local ws = range('w:', after)
    local gone, values = {}, hmget(ws)
    for i, w in ipairs(ws) do
      local cid = string.match(w, '^w:[^:]*:([^:]*):')
      if redis.call('HEXISTS', D, 'c:' .. ns .. ':' .. cid) == 0 then
        gone[#gone + 1] = w
        release_write(values[i])
      end
    end
    call_chunked('HDEL', D, gone)
    call_chunked('ZREM', I, gone)
    if #ws == budget then return #gone, false, ws[#ws] end
    went, budget, after = #gone, budget - #ws, nil
    if budget == 0 then return went, false, 'p:' .. ns .. ':' end
  end
  local ps = range('p:', after)
  for _, p in ipairs(ps) do
    local cid = string.match(p, '^p:[^:]*:(.*)$')
    if redis.call('HEXISTS', D, 'c:' .. ns .. ':' .. cid) == 0 then went = went + drop_packed(ns, cid) end
    redis.call('ZREM', I, p)  -- (a stored checkpoint's packed writes go with it)
  end
  if #ps == budget then return went, false, ps[#ps] end
  return went, true, nil
end

local function has_value(refs, prefix)
  for _, ref in ipairs(refs) do
    if string.sub(ref, 1, #prefix) == prefix then return true end
  end
  return false
end

-- Marks in `kept` the ancestors a checkpoint's DeltaChannel values (record field 5) are
-- rebuilt from: back to the one holding each such channel's seed.
local function keep_chain(kept, ns, rec)
  local r = meta(rec)
  local need = {}
  for _, prefix in ipairs(r[5]) do
    if not has_value(r[3], prefix) then need[#need + 1] = prefix end
  end
  local parent = r[2]
  while #need > 0 and parent ~= '' do
    local f = 'c:' .. ns .. ':' .. parent
    rec = redis.call('HGET', D, f)
    if not rec then return end
    kept[f] = true
    r = meta(rec)
    local still = {}
    for _, prefix in ipairs(need) do
      if not has_value(r[3], prefix) then still[#still + 1] = prefix end
    end
    need, parent = still, r[2]
  end
end

-- Keeps the `keep` newest checkpoints of a namespace (and the ancestors the DeltaChannel
-- values of the newest and of the oldest kept are rebuilt from), dropping older ones, oldest
-- first, looking at `budget` of them at most, after member `after` (nil: from the oldest).
-- Returns how many went, whether the namespace is done, the member to go on after, and the
-- oldest kept (nil: fewer than `keep`). `written`, `written_rec`: a checkpoint this script
-- just wrote and its record (its chain is read from the record).
local function trim(ns, keep, budget, written, written_rec, after)
  local newest = redis.call('ZREVRANGEBYLEX', I, '[c:' .. ns .. ':' .. HI, '[c:' .. ns .. ':', 'LIMIT', 0, keep)
  if #newest < keep then return 0, true, nil, nil end
  local oldest = newest[#newest]
  local kept = {}
  for _, m in ipairs(newest) do kept[m] = true end
  for _, m in ipairs({newest[1], oldest}) do
    local rec = (m == written and written_rec) or redis.call('HGET', D, m)
    if rec and #meta(rec)[5] > 0 then keep_chain(kept, ns, rec) end
  end
  local from = after and ('(' .. after) or ('[c:' .. ns .. ':')
  local older = redis.call('ZRANGEBYLEX', I, from, '(' .. oldest, 'LIMIT', 0, budget)
  local removed = 0
  for _, m in ipairs(older) do
    if not kept[m] then
      local _, cid = split_member(m)
      removed = removed + drop_checkpoint(ns, cid)
    end
  end
  return removed, #older < budget, older[#older], oldest
end

-- Deletes the thread's keys once it holds no checkpoint and no write (a thread left with
-- nothing, counters and all). UNLINK: memory is freed off the main thread.
local function drop_if_empty()
  if #by_prefix('c:', 1) == 0 and #by_prefix('w:', 1) == 0 and #by_prefix('p:', 1) == 0 then
    redis.call('UNLINK', D, I)
    return true
  end
  return false
end

local function bump()
  redis.call('HINCRBY', D, 'v', 1)
end

-- The write lists (field `at`: {name, value, ...}) of reply entries that have them.
local function writes_in(entries, at)
  local out = {}
  for _, e in ipairs(entries) do
    if e[at] then out[#out + 1] = e[at] end
  end
  return out
end

-- {digest, item, ...} for every item a reply refers to (its logs' digests and its writes'),
-- when they are at most `inline`: a small thread is read in one round trip. Otherwise {}:
-- the client has them, or fetches them in bounded chunks.
local function items_for(log_list, write_lists, inline)
  local digests, seen = {}, {}
  local function add(ds)
    for k = 1, #ds, 16 do
      local d = string.sub(ds, k, k + 15)
      if not seen[d] then
        seen[d] = true
        digests[#digests + 1] = d
        if #digests > inline then return false end
      end
    end
    return true
  end
  for i = 2, #log_list, 2 do
    local ds = log_list[i]
    if type(ds) == 'table' then ds = ds[2] end
    if ds and not add(ds) then return {} end
  end
  for _, writes in ipairs(write_lists) do
    for i = 2, #writes, 2 do
      local ds = write_parts(writes[i])
      if ds and not add(ds) then return {} end
    end
  end
  local fields = {}
  for i, d in ipairs(digests) do fields[i] = 'e:' .. d end
  local items, out = hmget(fields), {}
  for i, d in ipairs(digests) do
    out[#out + 1] = d
    out[#out + 1] = items[i]
  end
  return out
end
