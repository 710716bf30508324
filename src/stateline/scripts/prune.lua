-- prune: keep the newest checkpoints of every namespace, drop the rest (and writes whose
-- checkpoint is not stored), a bounded amount per call.
-- A kept checkpoint with DeltaChannel values also keeps the ancestors they are rebuilt
-- from (see keep_chain in _lib.lua): their writes are the only copy of those values.
-- KEYS: D, I.  ARGV: keep (>= 1 per namespace), budget, the namespace to go on from ('' = first)
-- Reply: {checkpoints and writes removed, namespace to go on from, 1 if there is more to do}
local keep, budget, from = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local removed = 0
local spaces = redis.call('ZRANGEBYLEX', I, '[s:' .. from, '[s:' .. HI, 'LIMIT', 0, 16)
for _, s in ipairs(spaces) do
  local ns = string.sub(s, 3)
  local went, done = trim(ns, keep, budget)
  removed = removed + went
  if done then  -- late writes up to the head (all of them in a namespace without checkpoints)
    local head = head_member(ns)
    local bound = head and ('[' .. string.sub(head, 3) .. ':' .. HI) or ('[' .. ns .. ':' .. HI)
    local late
    late, done = drop_orphan_writes(ns, bound, budget)
    removed = removed + late
  end
  if not done or removed >= budget then
    bump()
    collect(256)
    return {removed, ns, 1}
  end
  if not head_member(ns) and #by_prefix('w:' .. ns .. ':', 1) == 0 and #by_prefix('p:' .. ns .. ':', 1) == 0 then
    redis.call('ZREM', I, s)
  end
end
if removed > 0 then bump() end
local done = collect(256)
drop_if_empty()
if #spaces == 16 then return {removed, string.sub(spaces[16], 3) .. '\0', 1} end
return {removed, from, done and 0 or 1}
