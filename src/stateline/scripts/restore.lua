-- restore: write dumped fields into a new thread (the target of a copy).
-- KEYS: D, I.  ARGV: ttl_ms, n_fields, field, value... , then index members
local ttl, n = tonumber(ARGV[1]), tonumber(ARGV[2])
-- Log numbers and counters of the source would overwrite the target's own: copy only into
-- a thread that does not exist yet.
if redis.call('EXISTS', D, I) > 0 then return {'exists'} end
for i = 3, 2 + 2 * n, 500 do
  redis.call('HSET', D, unpack(ARGV, i, math.min(i + 499, 2 + 2 * n)))
end
for i = 3 + 2 * n, #ARGV, 250 do
  local args = {}
  for j = i, math.min(i + 249, #ARGV) do args[#args + 1] = 0; args[#args + 1] = ARGV[j] end
  redis.call('ZADD', I, unpack(args))
end
expire(ttl)
return {'ok', n}
