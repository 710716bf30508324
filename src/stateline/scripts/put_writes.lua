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
local entries = packed_writes(packed, before)
local at, size = {}, before and #before or 0
for i, e in ipairs(entries) do at[e[1] .. ' ' .. e[2]] = i end
local added, changed, stored = 0, false, 0
for i = first, #ARGV, 3 do
  local task, idx, v = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local overwrite = i < keep_first
  local e = entries[at[task .. ' ' .. idx]]
  local own = packed .. ':' .. task .. ':' .. idx
  if e then  -- packed already
    if overwrite then
      if e[3] ~= v then
        hold_write(v)
        release_write(e[3])
        size, e[3], changed = size + #v - #e[3], v, true
      end
      stored = stored + 1
    end
  else
    local old = redis.call('HGET', D, own)  -- in a field of its own (format 1, or too big)
    if old then
      if overwrite then
        if old ~= '+' .. v then
          redis.call('HSET', D, own, '+' .. v)
          hold_write(v)
          release_write(old)
        end
        stored = stored + 1
      end
    else
      local entry = #task + #idx + #tostring(#v) + 3 + #v
      if size + entry <= PACK then
        entries[#entries + 1] = {task, idx, v}
        at[task .. ' ' .. idx] = #entries
        size, added, changed = size + entry, added + 1, true
      else
        redis.call('HSET', D, own, '+' .. v)
        redis.call('ZADD', I, 0, own)
      end
      hold_write(v)
      stored = stored + 1
    end
  end
end
if changed then
  redis.call('HSET', D, packed, pack_writes(entries))
  if added > 0 then redis.call('HINCRBY', D, 'nw', added) end
  -- Writes may come before their checkpoint (or for one that never comes): the index names
  -- them, so that retention and prune find them (put removes the member).
  if not before and redis.call('HEXISTS', D, 'c:' .. ns .. ':' .. cid) == 0 then
    redis.call('ZADD', I, 0, 'p:' .. ns .. ':' .. cid)
  end
end
redis.call('ZADD', I, 0, 's:' .. ns)
collect(256)
bump()
expire(ttl)
return stored
