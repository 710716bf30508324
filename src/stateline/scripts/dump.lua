-- dump: one page of a thread's fields and index members, for copying it elsewhere.
-- KEYS: D, I.  ARGV: hash cursor ('0' = first), index bound ('-' = first), count
-- Reply: {next hash cursor ('0' = done), {field, value...}, next index bound ('' = done),
--         {member...}, write generation}
local cursor, bound, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local fields, members, next_bound = {}, {}, ''
if cursor ~= 'done' then
  local page = redis.call('HSCAN', D, cursor, 'COUNT', count)
  cursor, fields = page[1], page[2]
  if cursor == '0' then cursor = 'done' end
end
if bound ~= '' then
  members = redis.call('ZRANGEBYLEX', I, bound, '+', 'LIMIT', 0, count)
  if #members == count then next_bound = '(' .. members[#members] end
end
return {cursor, fields, next_bound, members, redis.call('HGET', D, 'v') or '0'}
