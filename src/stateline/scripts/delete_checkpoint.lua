-- delete_checkpoint: drop one checkpoint with its index entries, pending writes and its
-- references to values (what nobody else refers to goes with it).
-- KEYS: D, I.  ARGV: ns, cid or alias (percent-encoded).  Reply: 1 if it was stored, else 0.
local removed = drop_checkpoint(ARGV[1], resolve(ARGV[1], ARGV[2]))
if removed > 0 then
  bump()
  collect(256)
  drop_if_empty()
end
return removed
