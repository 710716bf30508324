-- list: one page of checkpoints, newest first.
-- KEYS: D, I.  ARGV: ns (or '' with all = '1'), all ('1' = every namespace),
--   upper bound (an exclusive ZRANGEBYLEX bound, or '' = from the newest), count,
--   before ('' = none: a cid or alias the first page starts below), bare ('1' = records
--   only, no values or writes), max_bytes (the page ends once its records and values
--   reach this many bytes), the most list items to send along (see items_for)
-- Reply: {{{ns, cid, record, {values}, {writes}}...}, {log, digests...}, {digest, item...}, more}
--   more = 1 when the page ended early (bytes) or has `count` entries: ask for the next.
local partial = check_whole()
if partial then return partial end
local ns, all, upper, count = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local bare, max_bytes, inline = ARGV[6] == '1', tonumber(ARGV[7]), tonumber(ARGV[8])
if ARGV[5] ~= '' then
  local before = resolve(ns, ARGV[5])  -- (every namespace: no alias, ids are the engine's)
  if all == '1' then upper = '(o:' .. before .. ' ' else upper = '(c:' .. ns .. ':' .. before end
end
-- Every namespace: the root's checkpoints (c:: members) merged with the others' (o:<cid>
-- <ns>), newest first, in the order of 'o:<cid> <ns>' (a root checkpoint stands as
-- 'o:<cid> ', which format 1 also stored: taken once). `upper` is such a bound.
local function every_namespace()
  local others = redis.call('ZREVRANGEBYLEX', I, upper ~= '' and upper or ('[o:' .. HI), '[o:', 'LIMIT', 0, count)
  local root_upper = '[c::' .. HI
  if upper ~= '' then
    local cid, m_ns = string.match(upper, '^%(o:([^ ]*) (.*)$')
    root_upper = (m_ns == '' and '(c::' or '[c::') .. cid
  end
  local roots = redis.call('ZREVRANGEBYLEX', I, root_upper, '[c::', 'LIMIT', 0, count)
  local out, i, j = {}, 1, 1
  while #out < count and (i <= #others or j <= #roots) do
    local root = roots[j] and ('o:' .. string.sub(roots[j], 4) .. ' ')
    if not others[i] or (root and bytes_before(others[i], root)) then
      out[#out + 1], j = root, j + 1
    else
      if root == others[i] then j = j + 1 end
      out[#out + 1], i = others[i], i + 1
    end
  end
  return out
end
local members
if all == '1' then
  members = every_namespace()
else
  local low = '[c:' .. ns .. ':'
  members = redis.call('ZREVRANGEBYLEX', I, upper ~= '' and upper or (low .. HI), low, 'LIMIT', 0, count)
end
local out, logs, bytes = {}, {}, 0
for i = 1, #members do
  local m_ns, m_cid
  if all == '1' then
    m_cid, m_ns = string.match(members[i], '^o:(.*) (.*)$')
  else
    m_ns, m_cid = split_member(members[i])
  end
  local found = load(m_ns, m_cid, logs, bare)
  if found then
    out[#out + 1] = found
    bytes = bytes + #found[3]
    for _, v in ipairs(found[4] or {}) do
      if type(v) == 'string' then bytes = bytes + #v end
    end
    if bytes >= max_bytes and i < #members then
      local log_list = reply_logs(logs)
      return {out, log_list, items_for(log_list, writes_in(out, 5), inline), 1, members[i]}
    end
  end
end
local log_list = reply_logs(logs)
return {out, log_list, items_for(log_list, writes_in(out, 5), inline), #members == count and 1 or 0, members[#members] or ''}
