-- put_writes: store the pending writes of one task, atomically.
-- KEYS: D, I.  ARGV[1]: 'ttl_ms n_elements n_overwrite'; then n_elements pairs (digest, bytes)
--       of list items; then n_overwrite pairs (field, value) of writes that replace what is
--       there (special channels), then pairs of writes that keep the first value stored.
--       A value is a record, or 'W<n>:<digests><record>' for a list stored by digest.
-- Reply: number of writes stored, or {'missing', digest...} when a write refers to items
--        neither sent nor stored (nothing is written then).
local ttl, n_el, n_over = string.match(ARGV[1], '^(%d+) (%d+) (%d+)$')
ttl, n_el, n_over = tonumber(ttl), tonumber(n_el), tonumber(n_over)
local sent = {}
for i = 2, 1 + 2 * n_el, 2 do sent[ARGV[i]] = ARGV[i + 1] end
local first = 2 + 2 * n_el
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

-- Items and overwriting writes go into one HSET (an item's field names its content),
-- the index entries into one ZADD.
local fields, members = {}, {}
for d, bytes in pairs(sent) do fields[#fields + 1] = 'e:' .. d; fields[#fields + 1] = bytes end
local stored = 0
for i = first, #ARGV, 2 do
  local f = ARGV[i]
  if i < keep_first then
    fields[#fields + 1] = f; fields[#fields + 1] = ARGV[i + 1]; stored = stored + 1
  else
    stored = stored + redis.call('HSETNX', D, f, ARGV[i + 1])
  end
  members[#members + 1] = 0; members[#members + 1] = f
end
call_chunked('HSET', D, fields)
call_chunked('ZADD', I, members)
expire(ttl)
return stored
