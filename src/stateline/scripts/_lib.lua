-- Shared helpers: each script of this folder gets the ones it uses prepended (plan.py).
-- Every script works on the two keys of one thread, which share one hash tag:
--   KEYS[1] = D, a hash of records:  c:<ns>:<cid> checkpoint, b:<ns>:<ch>:<ver> channel
--             value, l:<ns>:<ch>:<k> log of element digests, t:<ns>:<ch> current log
--             number, e:<digest> list element, w:<ns>:<cid>:<task>:<idx> pending write,
--             g garbage counter
--   KEYS[2] = I, a sorted set (all scores 0, ordered by member bytes):
--             c:<ns>:<cid>, o:<cid> <ns> (all namespaces by id), w:<ns>:<cid>:<task>:<idx>,
--             r:<run>:<ns>:<cid>
-- Components are percent-encoded by the client, so ':' and ' ' never occur inside them.
local D, I = KEYS[1], KEYS[2]
local HI = '\255'

-- A checkpoint record starts with a 4-byte length and a msgpack array the scripts read:
-- {format, parent cid, {value fields}, run, {DeltaChannel value prefixes}, alias}.
-- An alias is the id an adapter knows a checkpoint by (a:<ns>:<alias> -> cid).
local function meta(rec)
  local _, m = cmsgpack.unpack_one(rec, 4)
  return m
end

local function head_member(ns)
  return redis.call('ZREVRANGEBYLEX', I, '[c:' .. ns .. ':' .. HI, '[c:' .. ns .. ':', 'LIMIT', 0, 1)[1]
end

-- The checkpoint id an id stands for: itself, or the checkpoint that has it as alias.
-- (An alias of a checkpoint a trim dropped stays until the next sweep: it stands for nothing.)
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

-- The checkpoint member a run entry stands for: 'r:<run>:<ns>:<cid>' -> 'c:<ns>:<cid>'
-- (nil for an index member of another kind).
local function run_entry_member(m)
  local ns, cid = string.match(m, '^r:[^:]*:([^:]*):(.*)$')
  return ns and ('c:' .. ns .. ':' .. cid)
end

-- The checkpoint member an alias stands for: field 'a:<ns>:<alias>' holding cid -> 'c:<ns>:<cid>'.
local function alias_member(field, cid)
  return 'c:' .. string.match(field, '^a:([^:]*):') .. ':' .. cid
end

local function by_prefix(prefix)
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

-- The items of n digests (16 bytes each), in order.
local function items_of(digests, n)
  local fields = {}
  for i = 1, n do fields[i] = 'e:' .. string.sub(digests, 16 * i - 15, 16 * i) end
  return hmget(fields)
end

-- A list value is stored as 'L<n>:<log field>[|<kind>]': the first n digests of that log.
-- A kind (a wrapper the adapter puts around the list) comes back as a first element
-- '\0<kind>' (an item never starts with \0: its type name comes first).
local function read_blob(field)
  local v = redis.call('HGET', D, field)
  if not v or string.byte(v, 1) ~= 76 then return v end  -- 76 = 'L'
  local n, log, kind = string.match(v, '^L(%d+):([^|]*)|?(.*)$')
  local items = items_of(redis.call('HGET', D, log) or '', tonumber(n))
  if kind ~= '' then table.insert(items, 1, '\0' .. kind) end
  return items
end

-- A write whose value is a list of items stored by digest: 'W<n>:<16n digest bytes><record>'.
local function write_parts(v)
  if not v or string.byte(v, 1) ~= 87 then return nil end  -- 87 = 'W'
  local colon = string.find(v, ':', 2, true)
  local n = tonumber(string.sub(v, 2, colon - 1))
  return string.sub(v, colon + 1, colon + 16 * n), string.sub(v, colon + 16 * n + 1)
end

local function writes_of(ns, cid)
  local values = hmget(by_prefix('w:' .. ns .. ':' .. cid .. ':'))
  for i = 1, #values do
    local digests, record = write_parts(values[i])
    if digests then
      local out = items_of(digests, #digests / 16)
      table.insert(out, 1, record)
      values[i] = out
    end
  end
  return values
end

-- {cid, record, {values by ref}, {writes}} for one stored checkpoint, or nil.
local function load(ns, cid)
  local rec = redis.call('HGET', D, 'c:' .. ns .. ':' .. cid)
  if not rec then return nil end
  local refs = meta(rec)[3]
  local values = {}
  for i = 1, #refs do values[i] = read_blob(refs[i]) or false end
  return {ns, cid, rec, values, writes_of(ns, cid)}
end

local function expire(ttl)
  if ttl > 0 then
    redis.call('PEXPIRE', D, ttl)
    redis.call('PEXPIRE', I, ttl)
  end
end

-- Removes the pending writes of one checkpoint.
local function drop_writes(ns, cid)
  local writes = by_prefix('w:' .. ns .. ':' .. cid .. ':')
  call_chunked('HDEL', D, writes)
  call_chunked('ZREM', I, writes)
end

-- Removes one checkpoint's record and its own index entries (1 if it was stored). Its pending
-- writes are left to the caller (drop_checkpoint, trim), and so are its run entry and alias,
-- which only its record names: drop_checkpoint reads the record for them, a trim leaves them
-- to sweep(). Channel values, logs and elements are left to sweep(), which knows what is shared.
local function drop_record(ns, cid)
  local f = 'c:' .. ns .. ':' .. cid
  if redis.call('HDEL', D, f) == 0 then return 0 end
  redis.call('ZREM', I, f, 'o:' .. cid .. ' ' .. ns)
  return 1
end

-- Removes one checkpoint with its index entries, alias and pending writes.
local function drop_checkpoint(ns, cid)
  local rec = redis.call('HGET', D, 'c:' .. ns .. ':' .. cid)
  if not rec then return 0 end
  local m = meta(rec)
  local run, alias = m[4], m[6] or ''
  if alias ~= '' and redis.call('HGET', D, 'a:' .. ns .. ':' .. alias) == cid then
    redis.call('HDEL', D, 'a:' .. ns .. ':' .. alias)
  end
  if run ~= '' then redis.call('ZREM', I, 'r:' .. run .. ':' .. ns .. ':' .. cid) end
  drop_record(ns, cid)
  drop_writes(ns, cid)
  return 1
end

local function has_value(refs, prefix)
  for _, ref in ipairs(refs) do
    if string.sub(ref, 1, #prefix) == prefix then return redis.call('HEXISTS', D, ref) == 1 end
  end
  return false
end

-- Marks in `kept` the ancestors a checkpoint's DeltaChannel values (record field 5) are
-- rebuilt from: back to the one holding each such channel's seed, whose writes count too.
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

-- Removes the writes of namespace `ns` older than checkpoint `below` whose checkpoint is not
-- stored: writes of checkpoints just dropped (`dropped`: their ids) and writes that arrived
-- late for a checkpoint no longer stored (a write newer than the head is for the next
-- head). `kept`: members known to be stored. Returns how many late writes went.
local function drop_orphan_writes(ns, below, kept, dropped)
  local gone, late = {}, 0
  for _, w in ipairs(redis.call('ZRANGEBYLEX', I, '[w:' .. ns .. ':', '(w:' .. ns .. ':' .. below)) do
    local cid = string.match(w, '^w:[^:]*:([^:]*):')
    local f = 'c:' .. ns .. ':' .. cid
    if dropped[cid] or (not kept[f] and redis.call('HEXISTS', D, f) == 0) then
      gone[#gone + 1] = w
      if not dropped[cid] then late = late + 1 end
    end
  end
  call_chunked('HDEL', D, gone)
  call_chunked('ZREM', I, gone)
  return late
end

-- Keeps the `keep` newest checkpoints of a namespace (and the ancestors their DeltaChannel
-- values need); drops the others, then their writes and late ones older than the oldest
-- checkpoint kept (in one pass, not one per dropped checkpoint). Returns how many
-- checkpoints and late writes went, and how many checkpoints the namespace had. `written`:
-- optionally, the member of a checkpoint this script just wrote, and its record if it has
-- DeltaChannel values (false: it has none).
local function trim(ns, keep, written, written_rec)
  local members = redis.call('ZREVRANGEBYLEX', I, '[c:' .. ns .. ':' .. HI, '[c:' .. ns .. ':')
  if #members <= keep then return 0, #members end
  local kept = {}
  for i = 1, keep do
    kept[members[i]] = true
    if members[i] ~= written then
      keep_chain(kept, ns, redis.call('HGET', D, members[i]))
    elseif written_rec then
      keep_chain(kept, ns, written_rec)
    end
  end
  local _, oldest = split_member(members[keep])
  local dropped, removed = {}, 0
  for i = keep + 1, #members do
    if not kept[members[i]] then
      local _, cid = split_member(members[i])
      if drop_record(ns, cid) == 1 then
        dropped[cid] = true
        removed = removed + 1
        -- An id that begins the oldest kept one ('5' and '50') may sort its writes after it
        -- ('w::5:' > 'w::50' only if the next byte is below ':'): removed by prefix.
        if string.sub(oldest, 1, #cid) == cid then drop_writes(ns, cid) end
      end
    end
  end
  return removed + drop_orphan_writes(ns, oldest, kept, dropped), #members
end

-- Mark and sweep: deletes every channel value, log and element that no remaining
-- checkpoint or write references (elements live while a log or a write names them), and the
-- run entries and aliases of checkpoints no longer stored. O(size of the thread); runs on
-- prune and delete, and on retention every few trimmed checkpoints.
local function sweep()
  local live, refs = {}, {}  -- refs: the value fields in use, as an array (never iterate
  local cps = by_prefix('c:') -- a table with pairs() while adding keys to it: undefined in Lua)
  for i = 1, #cps do
    local rec = redis.call('HGET', D, cps[i])
    if rec then
      for _, ref in ipairs(meta(rec)[3]) do
        if not live[ref] then live[ref] = true; refs[#refs + 1] = ref end
      end
    end
  end
  local function mark(digests)
    for k = 1, #digests, 16 do live['e:' .. string.sub(digests, k, k + 15)] = true end
  end
  local writes = by_prefix('w:')
  for i = 1, #writes, 500 do
    local values = redis.call('HMGET', D, unpack(writes, i, math.min(i + 499, #writes)))
    for j = 1, #values do
      local digests = write_parts(values[j])
      if digests then mark(digests) end
    end
  end
  local logs = {}
  for _, f in ipairs(refs) do
    local v = redis.call('HGET', D, f)
    if v and string.byte(v, 1) == 76 then
      local log = string.match(v, '^L%d+:([^|]*)')
      if not logs[log] then
        logs[log] = true
        mark(redis.call('HGET', D, log) or '')
      end
    end
  end
  if #cps == 0 and #writes == 0 then  -- nothing left: the thread is gone, counters and all
    redis.call('DEL', D, I)
    return 0
  end
  local stored = {}
  for i = 1, #cps do stored[cps[i]] = true end
  -- Run entries and aliases of the checkpoints trims dropped (a trim does not read records).
  local stale_runs = {}
  for _, m in ipairs(by_prefix('r:')) do
    if not stored[run_entry_member(m)] then stale_runs[#stale_runs + 1] = m end
  end
  call_chunked('ZREM', I, stale_runs)
  -- Log counters (t:) stay: a reused log number would overwrite a log still in use.
  local dead, aliases = {}, {}
  local fields = redis.call('HKEYS', D)
  for i = 1, #fields do
    local f = fields[i]
    local kind = string.sub(f, 1, 2)
    if ((kind == 'b:' or kind == 'e:') and not live[f]) or (kind == 'l:' and not logs[f]) then
      dead[#dead + 1] = f
    elseif kind == 'a:' then
      aliases[#aliases + 1] = f
    end
  end
  local targets = hmget(aliases)
  for i = 1, #aliases do
    if not stored[alias_member(aliases[i], tostring(targets[i]))] then dead[#dead + 1] = aliases[i] end
  end
  call_chunked('HDEL', D, dead)
  redis.call('HDEL', D, 'g')
  return #dead
end
