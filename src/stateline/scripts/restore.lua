-- restore: write one page of dumped fields into a new thread (the target of a copy).
-- KEYS: D, I.  ARGV: ttl_ms, first ('1' = the first page: the thread must not exist), n_fields,
--   field, value... , then index members
-- Reply: {'ok', n} or {'exists'}
local ttl, first, n = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
-- Log ids and reference counts of the source would mix with the target's own: copy only
-- into a thread that does not exist yet.
if first == '1' and redis.call('EXISTS', D, I) > 0 then return {'exists'} end
for i = 4, 3 + 2 * n, 500 do
  redis.call('HSET', D, unpack(ARGV, i, math.min(i + 499, 3 + 2 * n)))
end
for i = 4 + 2 * n, #ARGV, 250 do
  local args = {}
  for j = i, math.min(i + 249, #ARGV) do args[#args + 1] = 0; args[#args + 1] = ARGV[j] end
  redis.call('ZADD', I, unpack(args))
end
expire(ttl)
return {'ok', n}
