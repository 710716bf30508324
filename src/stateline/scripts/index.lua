-- index: one shard of the discovery index. A thread's entries, and those of its runs, live
-- in the shard its id hashes to (keys.py), so a thread that expired goes with its runs in
-- the calls of this one script, and no key takes a write for every thread.
-- KEYS: L = <prefix>{threads:<k>}, a sorted set, all scores 0, ordered by member bytes:
--           t:<thread>             the thread (what listing pages through)
--           m:<thread> <run>       the runs of a thread (kept while the thread lives, even
--                                  when retention dropped their checkpoints)
--           r:<run> <thread>       the threads of a run (what delete_for_runs looks up)
--       X = <prefix>{threads:<k>}:exp, a sorted set: <thread> scored by the time (Unix ms)
--           after which its entries may go (threads without a TTL are not in it)
-- ARGV: 'add', now_ms, life_ms (0 = no TTL), thread, run...   index a thread and runs of
--              it; the entry lives life_ms from now, or longer if it already did
--       'drop', now_ms, thread                                  remove a thread's entries
-- now_ms is the client's clock (TIME is outside the ACL categories a user of stateline
-- needs); an entry outlives its thread by half a TTL, far more than clocks disagree.
-- Ids are percent-encoded by the client (never a space or ':' in them).
-- Reply: 1; 0 when 'drop' left run entries of the thread for another call.
-- Then every call removes expired threads with their runs, at most EXPIRED threads and
-- BUDGET runs in all (the client sends at most BUDGET runs per 'add'), so no call's work
-- grows with the shard or with a thread's runs; a thread with more runs goes over calls.
local L, X = KEYS[1], KEYS[2]
local BUDGET, EXPIRED = 256, 32

-- Removes up to `budget` runs of a thread and, once it has none left, the thread.
-- Returns whether the thread is gone and how many runs went.
local function unindex(thread, budget)
  local low = 'm:' .. thread .. ' '
  local runs = redis.call('ZRANGEBYLEX', L, '[' .. low, '[' .. low .. HI, 'LIMIT', 0, budget)
  local gone = {}
  for i = 1, #runs do
    gone[#gone + 1] = runs[i]
    gone[#gone + 1] = 'r:' .. string.sub(runs[i], #low + 1) .. ' ' .. thread
  end
  if #gone > 0 then redis.call('ZREM', L, unpack(gone)) end
  if #runs == budget then return false, #runs end
  redis.call('ZREM', L, 't:' .. thread)
  redis.call('ZREM', X, thread)
  return true, #runs
end

-- The shard lives at least as long as the longest-lived entry written into it (for ever
-- once a thread without TTL is in it), so a shard nobody writes to anymore goes too. X
-- lives exactly as long as L: trimming L needs every expiry X holds.
local function outlive(life, created)
  if life == 0 then
    redis.call('PERSIST', L)
  elseif created then
    redis.call('PEXPIRE', L, life)
  else
    redis.call('PEXPIRE', L, life, 'GT')  -- a key without expiry counts as infinite
  end
  local left = redis.call('PTTL', L)
  if left < 0 then redis.call('PERSIST', X) else redis.call('PEXPIRE', X, left) end
end

local function index_thread(now, life, thread)
  local members = {0, 't:' .. thread}
  for i = 5, #ARGV do
    members[#members + 1] = 0; members[#members + 1] = 'm:' .. thread .. ' ' .. ARGV[i]
    members[#members + 1] = 0; members[#members + 1] = 'r:' .. ARGV[i] .. ' ' .. thread
  end
  local created = redis.call('EXISTS', L) == 0
  redis.call('ZADD', L, unpack(members))
  if life > 0 then redis.call('ZADD', X, 'GT', string.format('%.0f', now + life), thread) end
  outlive(life, created)
end

local function trim_expired(now, budget)
  local expired = redis.call('ZRANGEBYSCORE', X, '-inf', '(' .. string.format('%.0f', now), 'LIMIT', 0, EXPIRED)
  for i = 1, #expired do
    if budget <= 0 then return end
    local gone, used = unindex(expired[i], budget)
    if not gone then return end
    budget = budget - used
  end
end

local now, reply, budget = tonumber(ARGV[2]), 1, BUDGET
if ARGV[1] == 'add' then
  index_thread(now, tonumber(ARGV[3]), ARGV[4])
else
  local gone, used = unindex(ARGV[3], BUDGET)
  reply, budget = gone and 1 or 0, BUDGET - used
end
trim_expired(now, budget)
return reply
