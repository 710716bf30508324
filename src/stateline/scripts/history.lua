-- history: the parent chain behind one checkpoint, for LangGraph's DeltaChannel.
-- KEYS: D, I.  ARGV: ns, cid ('' = the latest of ns), then the value field prefixes 'b:<ns>:<ch>:' wanted
-- Walks from the checkpoint's parent towards the root and stops once every wanted
-- channel has a stored value (its seed). Reply: {{cid, {writes}, {seed per channel or false}}...}
local ns, cid = ARGV[1], ARGV[2]
local wanted, remaining = {}, 0
for i = 3, #ARGV do wanted[#wanted + 1] = ARGV[i]; remaining = remaining + 1 end
local seeded = {}
if cid == '' then
  local head = head_member(ns)
  if not head then return {} end
  ns, cid = split_member(head)
end
local rec = redis.call('HGET', D, 'c:' .. ns .. ':' .. cid)
local out = {}
local parent = rec and meta(rec)[2] or ''
while parent ~= '' and remaining > 0 do
  rec = redis.call('HGET', D, 'c:' .. ns .. ':' .. parent)
  if not rec then break end
  local r = meta(rec)
  local seeds = {}
  for w = 1, #wanted do
    seeds[w] = false
    if not seeded[w] then
      for _, ref in ipairs(r[3]) do
        if string.sub(ref, 1, #wanted[w]) == wanted[w] then
          local v = read_blob(ref)
          if v then seeds[w] = v; seeded[w] = true; remaining = remaining - 1 end
          break
        end
      end
    end
  end
  out[#out + 1] = {parent, writes_of(ns, parent), seeds}
  parent = r[2]
end
return out
