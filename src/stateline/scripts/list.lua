-- list: one page of checkpoints, newest first.
-- KEYS: D, I.  ARGV: ns (or '' with all = '1'), all ('1' = every namespace),
--                    upper bound (an exclusive ZRANGEBYLEX bound, or '' = from the newest), count,
--                    before ('' = none: a cid or alias the first page starts below)
-- Reply: {{ns, cid, record, {values}, {writes}}...}, the last entry's index member is the next bound.
local ns, all, upper, count = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if ARGV[5] ~= '' then
  local before = resolve(ns, ARGV[5])  -- (every namespace: no alias, ids are the engine's)
  if all == '1' then upper = '(o:' .. before .. ' ' else upper = '(c:' .. ns .. ':' .. before end
end
local members
if all == '1' then
  members = redis.call('ZREVRANGEBYLEX', I, upper ~= '' and upper or ('[o:' .. HI), '[o:', 'LIMIT', 0, count)
else
  local low = '[c:' .. ns .. ':'
  members = redis.call('ZREVRANGEBYLEX', I, upper ~= '' and upper or (low .. HI), low, 'LIMIT', 0, count)
end
local out = {}
for i = 1, #members do
  local m_ns, m_cid
  if all == '1' then
    m_cid, m_ns = string.match(members[i], '^o:(.*) (.*)$')
  else
    m_ns, m_cid = split_member(members[i])
  end
  local found = load(m_ns, m_cid)
  if found then out[#out + 1] = found end
end
return out
