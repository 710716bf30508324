-- delete_runs: drop the checkpoints (and their writes) made by the given runs, at most
-- `budget` per call.
-- KEYS: D, I.  ARGV: budget, then run ids, percent-encoded.
-- Reply: {checkpoints removed, 1 if there may be more (call again)}
local budget, removed = tonumber(ARGV[1]), 0
for a = 2, #ARGV do
  local members = by_prefix('r:' .. ARGV[a] .. ':', budget - removed + 1)
  for i = 1, #members do
    if removed >= budget then
      collect(256)
      return {removed, 1}
    end
    local ns, cid = string.match(members[i], '^r:[^:]*:([^:]*):(.*)$')
    removed = removed + drop_checkpoint(ns, cid)
    redis.call('ZREM', I, members[i])
  end
end
if removed > 0 then bump() end
local done = collect(256)
drop_if_empty()
return {removed, done and 0 or 1}
