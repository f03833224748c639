-- The web UI's batch list: what it reads of many batches, in one call (worker/web/reads.py). Sent in
-- chunks so no single call holds Redis for long; a read only.
-- KEYS: per batch four keys: meta hash, agg hash, accepted-jobs set, dead-letter hash
-- ARGV: the agg fields to read
-- Returns per batch {meta as a flat field/value list, agg values (nil when missing), accepted, dead}
local out = {}
for i = 1, #KEYS, 4 do
  out[#out + 1] = {
    redis.call('HGETALL', KEYS[i]),
    redis.call('HMGET', KEYS[i + 1], unpack(ARGV)),
    redis.call('SCARD', KEYS[i + 2]),
    redis.call('HLEN', KEYS[i + 3]),
  }
end
return out
