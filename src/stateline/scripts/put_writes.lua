-- put_writes: store the pending writes of one task, atomically.
-- KEYS: D, I.  ARGV[1]: 'ttl_ms n_items n_overwrite ns'; then n_items pairs (digest, bytes)
--       of list items; then n_overwrite pairs (field, value) of writes that replace what is
--       there (special channels), then pairs of writes that keep the first value stored.
--       A value is a record, or 'W<n>:<digests><record>' for a list stored by digest.
-- Reply: number of writes stored, or {'missing', digest...} when a write refers to items
--        neither sent nor stored (nothing is written then).
local ttl, n_items, n_over, ns = string.match(ARGV[1], '^(%d+) (%d+) (%d+) ([^ ]*)$')
ttl, n_items, n_over = tonumber(ttl), tonumber(n_items), tonumber(n_over)
local partial = check_whole()
if partial then return partial end
local sent = {}
for i = 2, 1 + 2 * n_items, 2 do sent[ARGV[i]] = ARGV[i + 1] end
local first = 2 + 2 * n_items
local keep_first = first + 2 * n_over

local missing = {'missing'}
for i = first, #ARGV, 2 do
  local digests = write_parts(ARGV[i + 1])
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
local members, stored = {0, 's:' .. ns}, 0
for i = first, #ARGV, 2 do
  local f, v = ARGV[i], ARGV[i + 1]
  if i < keep_first then
    local old = redis.call('HGET', D, f)
    if old ~= v then
      redis.call('HSET', D, f, v)
      hold_write(v)
      if old then release_write(old) end
    end
    stored = stored + 1
  elseif redis.call('HSETNX', D, f, v) == 1 then
    hold_write(v)
    stored = stored + 1
  end
  members[#members + 1] = 0
  members[#members + 1] = f
end
call_chunked('ZADD', I, members)
collect(256)
bump()
expire(ttl)
return stored
