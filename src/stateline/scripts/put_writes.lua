-- put_writes: store the pending writes of one task, atomically.
-- KEYS: D, I.  ARGV[1]: 'ttl_ms n_items n_overwrite ns cid'; then n_items pairs (digest,
--       bytes) of list items; then n_overwrite triples (task, idx, value) of writes that
--       replace what is there (special channels), then triples of writes that keep the first
--       value stored. A value is a record, or 'W<n>:<digests><record>' for a list stored by
--       digest.
-- A checkpoint's writes are packed in one field ('w:<ns>:<cid>', see _lib.lua) while it
-- stays under PACK bytes; a write that does not fit gets a field of its own and an index
-- member, so a wide step (many tasks) does not rewrite a growing field on every call.
-- Reply: number of writes stored, or {'missing', digest...} when a write refers to items
--        neither sent nor stored (nothing is written then).
local ttl, n_items, n_over, ns, cid = string.match(ARGV[1], '^(%d+) (%d+) (%d+) ([^ ]*) ([^ ]*)$')
ttl, n_items, n_over = tonumber(ttl), tonumber(n_items), tonumber(n_over)
local partial = check_whole()
if partial then return partial end
local sent = {}
for i = 2, 1 + 2 * n_items, 2 do sent[ARGV[i]] = ARGV[i + 1] end
local first = 2 + 2 * n_items
local keep_first = first + 3 * n_over

local missing = {'missing'}
for i = first, #ARGV, 3 do
  local digests = write_parts(ARGV[i + 2])
  if digests then
    for k = 1, #digests, 16 do
      local d = string.sub(digests, k, k + 15)
      if not sent[d] and redis.call('HEXISTS', D, 'e:' .. d) == 0 then missing[#missing + 1] = d end
    end
  end
end
if #missing > 1 then return missing end

-- A stored write holds its items (each digest one reference).
local function hold_write(v)
  local digests = write_parts(v)
  if not digests then return end
  for k = 1, #digests, 16 do add_item(string.sub(digests, k, k + 15), sent) end
end

local packed = 'w:' .. ns .. ':' .. cid
local before = redis.call('HGET', D, packed)
-- `elsewhere`: writes of the checkpoint may be in fields of their own (one did not fit, or
-- format 1 stored them there): the packed field says so, or, before there is one, the index.
local heads, values_at, elsewhere = packed_parts(packed, before)
if not before then elsewhere = #by_prefix(packed .. ':', 1) > 0 end
local entries = nil  -- the packed writes, read only when one of them is replaced
local new, new_at, members = {}, {}, {}  -- writes this call packs (by '<task> <idx>'), own fields
local size, stored, changed = before and #before or 0, 0, false

-- A write in a field of its own, named by an index member (the packed field is marked).
local function spill(own, v)
  redis.call('HSET', D, own, '+' .. v)
  members[#members + 1], members[#members + 2] = 0, own
  if not elsewhere then elsewhere, changed = true, true end
end

for i = first, #ARGV, 3 do
  local task, idx, v = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local overwrite, key = i < keep_first, task .. ' ' .. idx
  local own = packed .. ':' .. task .. ':' .. idx
  local e = new[new_at[key]]
  local packed_here = not e and string.find(heads, '\n' .. key .. ' ', 1, true)
  if packed_here and overwrite then  -- (only a replacement needs the packed values)
    entries = entries or packed_writes(packed, before)
    for _, x in ipairs(entries) do
      if x[1] == task and x[2] == idx then e = x end
    end
  end
  if e and not e[3] then e = nil end  -- (moved out by this call: in its own field now)
  local grows = #key + #tostring(#v) + 2 + #v
  if e then
    if overwrite then
      if e[3] ~= v then
        hold_write(v)
        release_write(e[3])
        size = size - (#key + #tostring(#e[3]) + 2 + #e[3]) + grows
        if size <= PACK then e[3] = v else size, e[3] = size - grows, false; spill(own, v) end
        changed = true
      end
      stored = stored + 1
    end
  elseif packed_here then  -- packed already, and the first value stays
  elseif size + grows > PACK and not overwrite then  -- its own field, unless one holds it
    if redis.call('HSETNX', D, own, '+' .. v) == 1 then
      members[#members + 1], members[#members + 2] = 0, own
      if not elsewhere then elsewhere, changed = true, true end
      hold_write(v)
      stored = stored + 1
    end
  else
    local old = elsewhere and redis.call('HGET', D, own)
    if old then  -- in a field of its own (one that did not fit, or format 1)
      if overwrite and old ~= '+' .. v then
        redis.call('HSET', D, own, '+' .. v)
        hold_write(v)
        release_write(old)
      end
      stored = stored + (overwrite and 1 or 0)
    else
      if size + grows <= PACK then
        new[#new + 1] = {task, idx, v}
        new_at[key], size, changed = #new, size + grows, true
      else
        spill(own, v)
      end
      hold_write(v)
      stored = stored + 1
    end
  end
end
if #members > 0 then call_chunked('ZADD', I, members) end
if changed then
  local had = select(2, string.gsub(heads, '\n', '')) - 1
  local all = entries or {}
  for _, e in ipairs(new) do all[#all + 1] = e end
  local now = 0
  for _, e in ipairs(all) do now = now + (e[3] and 1 or 0) end
  if entries then
    redis.call('HSET', D, packed, pack_writes('\n', '', elsewhere, entries))
  else
    redis.call('HSET', D, packed, pack_writes(heads, before and string.sub(before, values_at) or '', elsewhere, new))
    now = now + had
  end
  if now ~= had then redis.call('HINCRBY', D, 'nw', now - had) end
end
if not before and stored > 0 and redis.call('HEXISTS', D, 'c:' .. ns .. ':' .. cid) == 0 then
  -- Writes may come before their checkpoint (or for one that never comes): the index names
  -- their namespace and, if packed, them, so that retention and prune find them (put
  -- removes the member). A stored checkpoint's namespace is named already.
  redis.call('ZADD', I, 0, 's:' .. ns)
  if changed then redis.call('ZADD', I, 0, 'p:' .. ns .. ':' .. cid) end
end
collect(256)
bump()
expire(ttl)
return stored
