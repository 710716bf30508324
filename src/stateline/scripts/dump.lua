-- dump: every field of a thread, for copying it elsewhere.
-- KEYS: D, I.  Reply: {hash fields and values (flat), index members}
-- The run entries and aliases of checkpoints a trim dropped (they wait for a sweep) stay behind.
local fields, members = redis.call('HGETALL', D), redis.call('ZRANGE', I, 0, -1)
local stored = {}
for _, m in ipairs(members) do
  if string.sub(m, 1, 2) == 'c:' then stored[m] = true end
end
local out_fields, out_members = {}, {}
for i = 1, #fields, 2 do
  local f = fields[i]
  if string.sub(f, 1, 2) ~= 'a:' or stored[alias_member(f, fields[i + 1])] then
    out_fields[#out_fields + 1] = f
    out_fields[#out_fields + 1] = fields[i + 1]
  end
end
for _, m in ipairs(members) do
  local of = run_entry_member(m)
  if not of or stored[of] then out_members[#out_members + 1] = m end
end
return {out_fields, out_members}
