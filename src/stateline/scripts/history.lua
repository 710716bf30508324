-- history: the parent chain behind one checkpoint, for LangGraph's DeltaChannel.
-- KEYS: D, I.  ARGV: ns, cid ('' = the latest of ns), the most ancestors to walk, the most
--   list items to send along, then the value field prefixes 'b:<ns>:<ch>:' wanted
-- Walks from the checkpoint's parent towards the root and stops once every wanted channel
-- has a stored value (its seed), or after the most ancestors asked for.
-- Reply: {{{cid, {writes}, {{field, seed} per channel, or false}}...}, {log, digests...},
--         {digest, item...}, next cid}
--   next cid: where to go on from ('' when done).
local partial = check_whole()
if partial then return partial end
local ns, cid, most, inline = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local wanted, remaining = {}, 0
for i = 5, #ARGV do wanted[#wanted + 1] = ARGV[i]; remaining = remaining + 1 end
local seeded = {}
local parent
if string.sub(cid, 1, 1) == '>' then  -- going on from an ancestor of an earlier call
  parent = string.sub(cid, 2)  -- (ARGV names only the channels still without a seed)
else
  if cid == '' then
    local head = head_member(ns)
    if not head then return {{}, {}, {}, ''} end
    ns, cid = split_member(head)
  end
  local rec = redis.call('HGET', D, 'c:' .. ns .. ':' .. cid)
  parent = rec and meta(rec, 'c:' .. ns .. ':' .. cid)[2] or ''
end
local out, logs, walked = {}, {}, 0
while parent ~= '' and remaining > 0 and walked < most do
  local rec = redis.call('HGET', D, 'c:' .. ns .. ':' .. parent)
  if not rec then parent = ''; break end
  local r = meta(rec, 'c:' .. ns .. ':' .. parent)
  local seeds = {}
  for w = 1, #wanted do
    seeds[w] = false
    if not seeded[w] then
      for _, ref in ipairs(r[3]) do
        if string.sub(ref, 1, #wanted[w]) == wanted[w] then
          local v = read_value(ref, logs)
          if v then seeds[w] = {ref, v}; seeded[w] = true; remaining = remaining - 1 end
          break
        end
      end
    end
  end
  out[#out + 1] = {parent, writes_of(ns, parent), seeds}
  parent, walked = r[2], walked + 1
end
if remaining == 0 then parent = '' end
local log_list = reply_logs(logs)
return {out, log_list, items_for(log_list, writes_in(out, 2), inline), parent}
