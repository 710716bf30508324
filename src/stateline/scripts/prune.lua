-- prune: keep the newest checkpoints of every namespace, drop the rest and sweep.
-- A kept checkpoint with DeltaChannel values (record field 9) also keeps its ancestors
-- back to the one holding each such channel's seed: their writes are the only copy.
-- KEYS: D, I.  ARGV: keep ( >= 1 checkpoints per namespace)
-- Reply: number of checkpoints removed.
local keep = tonumber(ARGV[1])
local members = redis.call('ZREVRANGEBYLEX', I, '[c:' .. HI, '[c:')
local kept, count = {}, {}

local function has_value(refs, prefix)
  for _, ref in ipairs(refs) do
    if string.sub(ref, 1, #prefix) == prefix then return redis.call('HEXISTS', D, ref) == 1 end
  end
  return false
end

local function keep_chain(ns, rec)
  local r = meta(rec)
  local need = {}
  for _, prefix in ipairs(r[5]) do
    if not has_value(r[3], prefix) then need[#need + 1] = prefix end
  end
  local parent = r[2]
  while #need > 0 and parent ~= '' do
    local f = 'c:' .. ns .. ':' .. parent
    rec = redis.call('HGET', D, f)
    if not rec then return end
    kept[f] = true
    r = meta(rec)
    local still = {}
    for _, prefix in ipairs(need) do
      if not has_value(r[3], prefix) then still[#still + 1] = prefix end
    end
    need, parent = still, r[2]
  end
end

for i = 1, #members do
  local ns = split_member(members[i])
  count[ns] = (count[ns] or 0) + 1
  if count[ns] <= keep then
    kept[members[i]] = true
    keep_chain(ns, redis.call('HGET', D, members[i]))
  end
end
local removed = 0
for i = 1, #members do
  if not kept[members[i]] then
    local ns, cid = split_member(members[i])
    removed = removed + drop_checkpoint(ns, cid)
  end
end
sweep()
return removed
