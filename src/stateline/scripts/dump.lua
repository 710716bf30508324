-- dump: every field of a thread, for copying it elsewhere.
-- KEYS: D, I.  Reply: {hash fields and values (flat), index members}
return {redis.call('HGETALL', D), redis.call('ZRANGE', I, 0, -1)}
