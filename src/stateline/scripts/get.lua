-- get: one checkpoint with its values and pending writes.
-- KEYS: D, I.  ARGV: ns, cid or alias ('' = the latest of ns), ttl_ms to refresh (0 = none),
--                    the most list items to send along (see items_for)
-- Reply: nil, or {{ns, cid, record, {values}, {writes}}, {log, digests...}, {digest, item...}}
local partial = check_whole()
if partial then return partial end
local ns, cid = ARGV[1], resolve(ARGV[1], ARGV[2])
if cid == '' then
  local head = head_member(ns)
  if not head then return nil end
  ns, cid = split_member(head)
end
local logs = {}
local found = load(ns, cid, logs)
if not found then return nil end
expire(tonumber(ARGV[3]))
local known = {}  -- ARGV[5..]: log, how many of its first digests the client has
for i = 5, #ARGV - 1, 2 do known[ARGV[i]] = tonumber(ARGV[i + 1]) end
local log_list = reply_logs(logs, known)
return {found, log_list, items_for(log_list, {found[5]}, tonumber(ARGV[4]))}
