-- prune: keep the newest checkpoints of every namespace, drop the rest (and writes whose
-- checkpoint is not stored), a bounded amount per call.
-- A kept checkpoint with DeltaChannel values also keeps the ancestors they are rebuilt
-- from (see keep_chain in _lib.lua): their writes are the only copy of those values.
-- KEYS: D, I.  ARGV: keep (>= 1 per namespace), budget, where to go on from: a namespace
--   ('' = the first), and after a space the index member looked at last in it
-- Reply: {checkpoints and writes removed, where to go on from, 1 if there is more to do}
local keep, budget, from = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local from_ns, cursor = string.match(from, '^([^ ]*) ?(.*)$')
local removed = 0
local spaces = redis.call('ZRANGEBYLEX', I, '[s:' .. from_ns, '[s:' .. HI, 'LIMIT', 0, 16)
for _, s in ipairs(spaces) do
  local ns = string.sub(s, 3)
  local after = ns == from_ns and cursor ~= '' and cursor or nil
  local done, last = true, nil
  if not after or string.sub(after, 1, 2) == 'c:' then
    local went
    went, done, last = trim(ns, keep, budget, nil, nil, after)
    removed, after = removed + went, nil
  end
  if done then  -- late writes up to the head (all of them in a namespace without checkpoints)
    local head = head_member(ns)
    local bound = head and ('[' .. string.sub(head, 3) .. ':' .. HI) or ('[' .. ns .. ':' .. HI)
    local late
    late, done, last = drop_orphan_writes(ns, bound, budget, after)
    removed = removed + late
  end
  if not done or removed >= budget then  -- (go on after what this call looked at)
    bump()
    collect(256)
    return {removed, ns .. (last and (' ' .. last) or ''), 1}
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
