-- Settle a tier's buckets with a call's actual usage, then give its lease back and wake waiters: what
-- bucket_take (mode "settle") followed by lease_release do, in one round trip.
-- KEYS: 1 leases zset, 2 limits config hash, 3 rpm bucket, 4 itpm bucket, 5 otpm bucket
-- ARGV: 1 lease id, 2 channel, 3 event payload, 4 tier,
--       5..7 settings defaults for rpm, itpm, otpm ("none" = unlimited), 8..10 deltas for rpm, itpm, otpm
-- Returns 1 if the lease was removed (then the event is published), 0 if it was already gone.
local deltas = {tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])}
if deltas[1] ~= 0 or deltas[2] ~= 0 or deltas[3] ~= 0 then
  local tier = ARGV[4]
  local caps = {
    limit_of(KEYS[2], tier, 'rpm', ARGV[5]),
    limit_of(KEYS[2], tier, 'itpm', ARGV[6]),
    limit_of(KEYS[2], tier, 'otpm', ARGV[7]),
  }
  buckets_settle({KEYS[3], KEYS[4], KEYS[5]}, caps, deltas, now_ms())
end
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return removed
