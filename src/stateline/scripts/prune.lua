-- prune: keep the newest checkpoints of every namespace, drop the rest and sweep.
-- A kept checkpoint with DeltaChannel values also keeps the ancestors they are rebuilt
-- from (see keep_chain in _lib.lua): their writes are the only copy of those values.
-- KEYS: D, I.  ARGV: keep ( >= 1 checkpoints per namespace)
-- Reply: number of checkpoints and late writes removed.
local keep = tonumber(ARGV[1])
local members = by_prefix('c:')
local namespaces, removed = {}, 0
for i = 1, #members do namespaces[split_member(members[i])] = true end
for ns in pairs(namespaces) do
  removed = removed + trim(ns, keep)
  -- trim looks below the oldest checkpoint kept; a prune also clears late writes up to the head
  local _, head = split_member(head_member(ns))
  removed = removed + drop_orphan_writes(ns, head, {}, {})
end
sweep()
return removed
