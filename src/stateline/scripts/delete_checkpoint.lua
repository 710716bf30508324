-- delete_checkpoint: drop one checkpoint with its index entries and pending writes, then
-- sweep the values, logs and list elements that no remaining checkpoint refers to.
-- KEYS: D, I.  ARGV: ns, cid or alias (percent-encoded).  Reply: 1 if it was stored, else 0.
-- Keys touched: D, I only; the TTL is left as it is.
local removed = drop_checkpoint(ARGV[1], resolve(ARGV[1], ARGV[2]))
if removed > 0 then sweep() end
return removed
