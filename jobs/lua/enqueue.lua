-- Bulk enqueue with per-batch dedup, in one round trip per chunk.
-- KEYS[1] queue zset, KEYS[2] batch job-id set, KEYS[3] batch meta hash, KEYS[4] batches zset
-- ARGV[1] arq job key prefix, ARGV[2] job expiry ms, ARGV[3] score (ms), ARGV[4] batch id,
-- ARGV[5] retention ms for batch keys, ARGV[6..] pairs: job id, arq payload
-- Returns one flag per job: 1 enqueued, 0 duplicate (already accepted into this batch).
local flags = {}
local added, dups = 0, 0
for i = 6, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('SADD', KEYS[2], id) == 1 then
    redis.call('PSETEX', ARGV[1] .. id, ARGV[2], ARGV[i + 1])
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    added = added + 1
    flags[#flags + 1] = 1
  else
    dups = dups + 1
    flags[#flags + 1] = 0
  end
end
redis.call('HINCRBY', KEYS[3], 'enqueued', added)
redis.call('HINCRBY', KEYS[3], 'duplicates', dups)
redis.call('HSETNX', KEYS[3], 'created_ms', ARGV[3])
redis.call('ZADD', KEYS[4], 'NX', ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
return flags
