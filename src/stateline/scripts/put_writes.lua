-- put_writes: store the pending writes of one task, atomically.
-- KEYS: D, I.  ARGV: ttl_ms, n_elements, then n_elements pairs (digest, bytes) of list items,
--       then per write: field, overwrite ('1' special channel, '0' keep the first), value
--       (a record, or 'W<n>:<digests><record>' for a list stored by digest)
-- Reply: number of writes stored, or {'missing', digest...} when a write refers to items
--        neither sent nor stored (nothing is written then).
local ttl, n_el = tonumber(ARGV[1]), tonumber(ARGV[2])
local sent = {}
for i = 3, 2 + 2 * n_el, 2 do sent[ARGV[i]] = ARGV[i + 1] end
local first = 3 + 2 * n_el

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

-- Items and overwriting writes go into one HSET (an item's field names its content),
-- the index entries into one ZADD.
local fields, members = {}, {}
for d, bytes in pairs(sent) do fields[#fields + 1] = 'e:' .. d; fields[#fields + 1] = bytes end
local stored = 0
for i = first, #ARGV, 3 do
  local f = ARGV[i]
  if ARGV[i + 1] == '1' then
    fields[#fields + 1] = f; fields[#fields + 1] = ARGV[i + 2]; stored = stored + 1
  else
    stored = stored + redis.call('HSETNX', D, f, ARGV[i + 2])
  end
  members[#members + 1] = 0; members[#members + 1] = f
end
hset_pairs(fields)
for i = 1, #members, 1000 do redis.call('ZADD', I, unpack(members, i, math.min(i + 999, #members))) end
expire(ttl)
return stored
