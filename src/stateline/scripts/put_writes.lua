-- put_writes: store the pending writes of one task, atomically.
-- KEYS: D, I.  ARGV: ttl_ms, then per write: field, overwrite ('1' special channel, '0' keep first), bytes
-- Reply: number of writes stored.
local ttl, stored = tonumber(ARGV[1]), 0
for i = 2, #ARGV, 3 do
  local f = ARGV[i]
  if ARGV[i + 1] == '1' then
    redis.call('HSET', D, f, ARGV[i + 2]); stored = stored + 1
  else
    stored = stored + redis.call('HSETNX', D, f, ARGV[i + 2])
  end
  redis.call('ZADD', I, 0, f)
end
expire(ttl)
return stored
