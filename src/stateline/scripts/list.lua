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
local members
if all == '1' then
  members = redis.call('ZREVRANGEBYLEX', I, upper ~= '' and upper or ('[o:' .. HI), '[o:', 'LIMIT', 0, count)
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
