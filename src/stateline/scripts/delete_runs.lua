-- delete_runs: drop every checkpoint (and its writes) made by the given runs, then sweep.
-- KEYS: D, I.  ARGV: run ids, percent-encoded.  Reply: number of checkpoints removed.
local removed = 0
for a = 1, #ARGV do
  local members = by_prefix('r:' .. ARGV[a] .. ':')
  for i = 1, #members do
    removed = removed + drop_checkpoint(split_member(run_entry_member(members[i])))
    redis.call('ZREM', I, members[i])
  end
end
if removed > 0 then sweep() end
return removed
