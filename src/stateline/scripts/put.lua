-- put: store one checkpoint with the channel values that changed, atomically.
-- KEYS: D, I (see _lib.lua)
-- ARGV[1]: 'ns cid ttl_ms keep_last setnx deltas run expect alias n_items log_id policy',
--          space-separated (ids are percent-encoded, so never contain a space): ttl_ms 0 =
--          none, keep_last 0 = all, setnx 1 = keep values already stored (forks, copies),
--          deltas 1 = the record has DeltaChannel values (retention keeps their ancestors),
--          run '' = none, expect '' = don't check, '-' = namespace must be empty, else a cid;
--          alias '' = none; log_id: the id of a log this put starts, if it must start one;
--          policy 1 = answer the server's maxmemory-policy when it may evict (else '').
-- ARGV[2]: the record (its value fields are every value the checkpoint refers to);
--          then n_items pairs (digest, bytes) of list items;
--          then per value to write: field, and 'v<bytes>', 'L<kind>|<digests>' (a whole
--          list) or 'A<kind>|<log>|<m>|<digests>' (the first m digests of <log>, then these).
-- Reply: {'ok', first checkpoint of the thread (1/0), first of this run (1/0), {field, log, n}...,
--         maxmemory-policy or ''};
--        {'conflict', head cid or ''}; {'behind', parent cid} when the checkpoint would sort
--        before the parent it expects; {'missing', digest...} for list items neither sent nor
--        stored; {'gone', field...} for values the record refers to that are not stored and
--        not sent; {'stale', field} for an 'A' value whose log is not what the client thought.
--        Nothing is written unless the reply is 'ok'.
local ns, cid, ttl, keep, setnx, deltas, run, expect, alias, n_items, log_id, ask_policy =
  string.match(ARGV[1], '^([^ ]*) ([^ ]*) (%d+) (%d+) ([01]) ([01]) ([^ ]*) ([^ ]*) ([^ ]*) (%d+) ([^ ]*) ([01])$')
ttl, keep, n_items = tonumber(ttl), tonumber(keep), tonumber(n_items)
local partial = check_whole()
if partial then return partial end
local rec = ARGV[2]

local member = 'c:' .. ns .. ':' .. cid

if expect ~= '' then
  local head = head_member(ns)
  local want = nil
  if expect ~= '-' then want = 'c:' .. ns .. ':' .. resolve(ns, expect) end
  -- Our own id as the head means this very put was applied already (a retried call); so
  -- does our alias (a retried put the client had to reorder, see 'behind').
  if head ~= want and head ~= member then
    local head_cid = ''
    if head then
      head_cid = select(2, split_member(head))
      local known_as = meta(redis.call('HGET', D, head))[6] or ''  -- the id the caller knows
      if known_as ~= '' then head_cid = known_as end
    end
    if alias == '' or head_cid ~= alias then return {'conflict', head_cid} end
  end
  -- The checkpoint becomes the head after the one it follows, so it must sort after it
  -- (the client orders by a clock, which may be behind the parent's host's clock).
  if want and bytes_before(member, want) then return {'behind', select(2, split_member(want))} end
end

local sent = {}
for i = 3, 2 + 2 * n_items, 2 do sent[ARGV[i]] = ARGV[i + 1] end
local given, order = {}, {}
for i = 3 + 2 * n_items, #ARGV, 2 do
  given[ARGV[i]] = ARGV[i + 1]
  order[#order + 1] = ARGV[i]
end

-- Every value the record refers to is sent now or stored already (a value deleted
-- meanwhile, by another process or an expiry, must not leave a checkpoint without it).
local refs = meta(rec)[3]
local gone = {'gone'}
for _, f in ipairs(refs) do
  if not given[f] and redis.call('HEXISTS', D, f) == 0 then gone[#gone + 1] = f end
end
if #gone > 1 then return gone end

-- Plan every list: reuse a prefix of a log, extend it, or start a new one.
local lists, missing = {}, {'missing'}
local function check(digests)
  for k = 1, #digests, 16 do
    local d = string.sub(digests, k, k + 15)
    if not sent[d] and redis.call('HEXISTS', D, 'e:' .. d) == 0 then missing[#missing + 1] = d end
  end
end
-- `digests` follows the first `from` digests of `log` (of length `len`): append to the log,
-- reuse what it holds already, or start a new log on the prefix they share.
local function plan_list(field, log, len, digests, from)
  local n = from + #digests / 16
  if len == from then
    check(digests)
    return {field = field, log = log, append = digests, at = from, n = n}
  end
  local shared = common_prefix(log_slice(log, from, math.min(len, n)) or '', digests)
  if from + shared == n then return {field = field, log = log, n = n} end
  local own = string.sub(digests, 16 * shared + 1)
  check(own)
  return {field = field, base = log, base_n = from + shared, own = own, n = n}
end
for _, field in ipairs(order) do
  local value = given[field]
  local tag = string.byte(value, 1)
  if (tag == 76 or tag == 65) and not (setnx == '1' and redis.call('HEXISTS', D, field) == 1) then  -- 'L', 'A'
    local bar = string.find(value, '|', 2, true)
    local kind, rest = string.sub(value, 2, bar - 1), string.sub(value, bar + 1)
    local base = string.match(field, '^b:([^:]*:[^:]*):')  -- b:<ns>:<ch>:<version>
    local p
    if tag == 65 then
      local log, m, digests = string.match(rest, '^([^|]*)|(%d+)|(.*)$')
      m = tonumber(m)
      local len = log_head(log) or -1
      if len < m or not counted(log) then return {'stale', field} end
      p = plan_list(field, log, len, digests, m)
    else
      local tip = redis.call('HGET', D, 't:' .. base)
      local log = tip and ('l:' .. base .. ':' .. tip)
      local len = log and log_head(log) or -1
      if len >= 0 then  -- the channel's newest log: the new list likely shares a prefix with it
        local shared = common_prefix(log_digests(log, math.min(len, #rest / 16)) or '', rest)
        p = plan_list(field, log, len, string.sub(rest, 16 * shared + 1), shared)
      else
        check(rest)
        p = {field = field, own = rest, base_n = 0, n = #rest / 16}
      end
    end
    if p.own then
      p.log = 'l:' .. base .. ':' .. log_id
      local len = log_head(p.log)
      if len then  -- this put's own log, made by an earlier try of this very call
        local planned = (p.base and log_slice(p.base, 0, p.base_n) or '') .. p.own
        if len < p.n or log_digests(p.log, p.n) ~= planned then
          return redis.error_reply('STATELINE_LOG log id ' .. log_id .. ' is taken')
        end
        p.own = nil
      end
    end
    p.tip, p.kind = 't:' .. base, kind ~= '' and ('|' .. kind) or ''
    lists[#lists + 1] = p
  end
end
if #missing > 1 then return missing end

-- Writes `value` into value field `f`, releasing the log the old value referred to; a new
-- field is stored with its first reference (noted in `created`).
local created = {}
local function set_value(f, value, log)
  local old = redis.call('HGET', D, f)
  if old == value then return end
  redis.call('HSET', D, f, value)
  if not old then created[f] = true end
  if log then hold(log) end
  if old and string.byte(old, 1) == 76 then
    local _, old_log = list_parts(old)
    release(old_log)
  end
end
for _, f in ipairs(order) do
  local value = given[f]
  if string.byte(value, 1) == 118 and not (setnx == '1' and redis.call('HEXISTS', D, f) == 1) then  -- 'v'
    set_value(f, value)
  end
end
local placed = {}
for _, p in ipairs(lists) do
  if p.own then
    log_start(p.log, p.base, p.base_n, p.own, sent)
  elseif p.append and #p.append > 0 then
    log_append(p.log, p.at, p.append, sent)
  end
  redis.call('HSET', D, p.tip, string.match(p.log, ':([^:]*)$'))
  set_value(p.field, 'L' .. p.n .. ':' .. p.log .. p.kind, p.log)
  placed[#placed + 1] = p.field
  placed[#placed + 1] = p.log
  placed[#placed + 1] = p.n
end

-- A thread with no checkpoint yet may be missing from the discovery index (deleted or
-- expired meanwhile, maybe by another process): the reply asks the client to index it.
local fresh = 0
if #by_prefix('c:', 1) == 0 then fresh = 1 end
local new_run = 0
if run ~= '' and #by_prefix('r:' .. run .. ':', 1) == 0 then new_run = 1 end
if alias ~= '' then  -- saving an alias again replaces the checkpoint that had it
  local old = redis.call('HGET', D, 'a:' .. ns .. ':' .. alias)
  if old and old ~= cid then drop_checkpoint(ns, old) end
  redis.call('HSET', D, 'a:' .. ns .. ':' .. alias, cid)
end
-- The new record's references first, then the old one's (a record saved again) go.
for _, f in ipairs(refs) do
  if not created[f] then hold(f) end
end
local old_rec = redis.call('HGET', D, member)
redis.call('HSET', D, member, rec)
if old_rec then
  for _, f in ipairs(meta(old_rec)[3]) do release(f) end
end
redis.call('ZADD', I, 0, member, 0, 's:' .. ns)
if ns ~= '' then redis.call('ZADD', I, 0, 'o:' .. cid .. ' ' .. ns) end  -- (the root's: its c:: members)
redis.call('ZREM', I, 'p:' .. ns .. ':' .. cid)  -- its writes came first: they go with it now
if run ~= '' then redis.call('ZADD', I, 0, 'r:' .. run .. ':' .. ns .. ':' .. cid) end

if keep > 0 then  -- retention: shallow savers keep 1, keep_last=N keeps N
  local _, _, _, oldest = trim(ns, keep, 16, member, deltas == '1' and rec)
  if oldest then drop_orphan_writes(ns, '(' .. string.sub(oldest, 3), 16) end  -- (prune does the rest)
end
collect(256)
bump()
expire(ttl)
local policy = ''
if ask_policy == '1' then  -- (INFO may be denied to the user: then nothing is said)
  local info = redis.pcall('INFO', 'memory')
  if type(info) == 'string' and tonumber(string.match(info, 'maxmemory:(%d+)') or '0') > 0 then
    policy = string.match(info, 'maxmemory_policy:([%w%-]+)') or ''
  end
end
return {'ok', fresh, new_run, placed, policy}
