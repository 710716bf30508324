-- get: one checkpoint with its values and pending writes.
-- KEYS: D, I.  ARGV: ns, cid or alias ('' = the latest of ns), ttl_ms to refresh (0 = none)
-- Reply: {ns, cid, record, {values}, {writes}} or nil.
local ns, cid = ARGV[1], ARGV[2]
cid = resolve(ns, cid)
if cid == '' then
  local head = head_member(ns)
  if not head then return nil end
  ns, cid = split_member(head)
end
local found = load(ns, cid)
if found then expire(tonumber(ARGV[3])) end
return found
