-- Undo a final outcome before re-running the job (`routeq retry`): the reverse of record.lua.
-- The job's attempts list is kept, so the new outcome will again carry every paid call. An entry still
-- pending in a worker's hash (recorded within the last ~100 ms) never reached the aggregates: it is
-- deleted there instead of subtracted.
-- KEYS as record.lua's first five, then KEYS[6] the set of registered worker processes (owner tokens)
-- ARGV[1] job id, ARGV[2] the pending hashes' key prefix (the owner token follows), ARGV[3] the job's
-- aggregate entry (agg_lib.lua)
if redis.call('SREM', KEYS[2], ARGV[1]) == 0 then
  return 0
end
local pending = false
for _, owner in ipairs(redis.call('SMEMBERS', KEYS[6])) do
  if redis.call('HDEL', ARGV[2] .. owner, ARGV[1]) == 1 then
    pending = true
    break
  end
end
if not pending then agg_apply(ARGV[3], -1) end
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
