-- put: store one checkpoint with the channel values that changed, atomically.
-- KEYS: D, I (see _lib.lua)
-- ARGV[1]: 'ns cid ttl_ms keep_last setnx deltas run expect alias n_elements', space-separated
--          (ids are percent-encoded, so never contain a space): ttl_ms 0 = none, keep_last
--          0 = all, setnx 1 = keep values already stored (forks, copies), deltas 1 = the record
--          has DeltaChannel values (retention keeps their ancestors), run '' = none,
--          expect '' = don't check, '-' = namespace must be empty, else a cid; alias '' = none.
-- ARGV[2]: the record; then n_elements pairs (digest, bytes) of list items;
--          then per channel value: field, 'v<bytes>' or 'L<kind>|<digests, 16 bytes each>'
--          (kind: '' or the name of the wrapper around the list).
-- Reply: {'ok', first checkpoint of the thread (1/0), first checkpoint of this run in the thread (1/0)},
--        {'conflict', head cid or ''}, or {'missing', digest...} when a list refers to
--        elements neither sent nor stored (nothing is written then).
local ns, cid, ttl, keep, setnx, deltas, run, expect, alias, n_el =
  string.match(ARGV[1], '^([^ ]*) ([^ ]*) (%d+) (%d+) ([01]) ([01]) ([^ ]*) ([^ ]*) ([^ ]*) (%d+)$')
ttl, keep, n_el = tonumber(ttl), tonumber(keep), tonumber(n_el)
local rec = ARGV[2]

if expect ~= '' then
  local head = head_member(ns)
  local want = nil
  if expect ~= '-' then want = 'c:' .. ns .. ':' .. resolve(ns, expect) end
  -- Our own id as the head means this very put was applied already (a retried call).
  if head ~= want and head ~= 'c:' .. ns .. ':' .. cid then
    local _, head_cid = '', ''
    if head then
      _, head_cid = split_member(head)
      local alias = meta(redis.call('HGET', D, head))[6] or ''  -- the id the caller knows
      if alias ~= '' then head_cid = alias end
    end
    return {'conflict', head_cid}
  end
end

local sent = {}
for i = 3, 2 + 2 * n_el, 2 do sent[ARGV[i]] = ARGV[i + 1] end
local first_value = 3 + 2 * n_el

-- Plan every list first: reuse or extend the channel's current log, or start a new one.
local lists, missing = {}, {}
local function check(digests, from)
  for k = from, #digests, 16 do
    local d = string.sub(digests, k, k + 15)
    if not sent[d] and redis.call('HEXISTS', D, 'e:' .. d) == 0 then missing[#missing + 1] = d end
  end
end
for i = first_value, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  if string.byte(value, 1) == 76 and not (setnx == '1' and redis.call('HEXISTS', D, field) == 1) then  -- 'L'
    local bar = string.find(value, '|', 2, true)
    local kind, digests = string.sub(value, 2, bar - 1), string.sub(value, bar + 1)
    local base = 'l:' .. string.match(field, '^b:([^:]*:[^:]*):')  -- b:<ns>:<ch>:<version>
    local tip = redis.call('HGET', D, 't:' .. string.sub(base, 3))
    local log = tip and redis.call('HGET', D, base .. ':' .. tip)
    local plan = {field = field, n = #digests / 16, kind = kind ~= '' and ('|' .. kind) or ''}
    if log and #digests <= #log and string.sub(log, 1, #digests) == digests then
      plan.log = base .. ':' .. tip                        -- a prefix of the log: reuse
    elseif log and #digests > #log and string.sub(digests, 1, #log) == log then
      plan.log, plan.content = base .. ':' .. tip, digests -- extends the log: append
      check(digests, #log + 1)
    else
      plan.counter, plan.base, plan.content = 't:' .. string.sub(base, 3), base, digests
      check(digests, 1)                                    -- rewritten: a new log
    end
    lists[#lists + 1] = plan
  end
end
if #missing > 0 then
  table.insert(missing, 1, 'missing')
  return missing
end

-- Everything but values kept as they are goes into one HSET: an element's field names
-- its content, so writing it again changes nothing.
local fields = {}
local function set(f, v) fields[#fields + 1] = f; fields[#fields + 1] = v end
for d, bytes in pairs(sent) do set('e:' .. d, bytes) end
for i = first_value, #ARGV, 2 do
  if string.byte(ARGV[i + 1], 1) ~= 76 then  -- a value stored as it is, 'v<bytes>'
    if setnx == '1' then redis.call('HSETNX', D, ARGV[i], ARGV[i + 1]) else set(ARGV[i], ARGV[i + 1]) end
  end
end
for _, p in ipairs(lists) do
  if p.counter then p.log = p.base .. ':' .. redis.call('HINCRBY', D, p.counter, 1) end
  if p.content then set(p.log, p.content) end
  set(p.field, 'L' .. p.n .. ':' .. p.log .. p.kind)
end

-- A thread with no checkpoint yet may be missing from the discovery index (deleted or
-- expired meanwhile, maybe by another process): the reply asks the client to index it.
-- (With retention the trim's listing of the namespace below tells, without a call of its own.)
local fresh = 0
if keep == 0 and #redis.call('ZRANGEBYLEX', I, '[c:', '[c:' .. HI, 'LIMIT', 0, 1) == 0 then fresh = 1 end
local new_run = 0
if run ~= '' and #redis.call('ZRANGEBYLEX', I, '[r:' .. run .. ':', '[r:' .. run .. ':' .. HI, 'LIMIT', 0, 1) == 0 then
  new_run = 1
end
if alias ~= '' then  -- saving an alias again replaces the checkpoint that had it
  local old = redis.call('HGET', D, 'a:' .. ns .. ':' .. alias)
  if old and old ~= cid then drop_checkpoint(ns, old) end
  set('a:' .. ns .. ':' .. alias, cid)
end
set('c:' .. ns .. ':' .. cid, rec)
call_chunked('HSET', D, fields)
redis.call('ZADD', I, 0, 'c:' .. ns .. ':' .. cid, 0, 'o:' .. cid .. ' ' .. ns)
if run ~= '' then redis.call('ZADD', I, 0, 'r:' .. run .. ':' .. ns .. ':' .. cid) end

if keep > 0 then  -- retention: shallow savers keep 1, keep_last=N keeps N
  local dropped, listed = trim(ns, keep, 'c:' .. ns .. ':' .. cid, deltas == '1' and rec)
  if listed == 1 and #redis.call('ZRANGEBYLEX', I, '[c:', '[c:' .. HI, 'LIMIT', 0, 2) == 1 then
    fresh = 1  -- this checkpoint alone in its namespace, and no other namespace has one
  end
  if dropped > 0 and redis.call('HINCRBY', D, 'g', dropped) >= 16 then sweep() end
end
expire(ttl)
return {'ok', fresh, new_run}
