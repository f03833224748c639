-- Bulk enqueue with per-batch dedup, in one round trip per chunk.
-- KEYS[1] queue zset, KEYS[2] batch job-id set, KEYS[3] batch meta hash, KEYS[4] batches zset,
-- KEYS[5] batch caller-id hash (internal id -> "<content sha256> <caller id>")
-- ARGV[1] arq job key prefix, ARGV[2] job expiry ms, ARGV[3] score (ms), ARGV[4] batch id,
-- ARGV[5] retention ms for batch keys, ARGV[6] tenant,
-- ARGV[7..] triples: internal job id, caller-id record ('' when the caller gave no id), arq payload
-- Returns one flag per job: 1 enqueued, 0 duplicate (already accepted into this batch), 2 the caller's
-- id is taken in this batch by a job with other content; or {-1, owner} when the batch belongs to
-- another tenant (nothing written).
local owner = redis.call('HGET', KEYS[3], 'tenant')
if owner and owner ~= ARGV[6] then
  return {-1, owner}
end
local flags = {}
local added, dups = 0, 0
for i = 7, #ARGV, 3 do
  local id, rec = ARGV[i], ARGV[i + 1]
  local flag
  if rec ~= '' then
    local known = redis.call('HGET', KEYS[5], id)
    if known then
      flag = (string.sub(known, 1, 64) == string.sub(rec, 1, 64)) and 0 or 2
    elseif redis.call('SISMEMBER', KEYS[2], string.sub(rec, 66)) == 1 then
      flag = 0 -- accepted before ids were scoped to their batch, under the caller's id itself
    end
  end
  if flag == nil then
    if redis.call('SADD', KEYS[2], id) == 1 then
      redis.call('PSETEX', ARGV[1] .. id, ARGV[2], ARGV[i + 2])
      redis.call('ZADD', KEYS[1], ARGV[3], id)
      if rec ~= '' then
        redis.call('HSET', KEYS[5], id, rec)
      end
      flag = 1
    else
      flag = 0
    end
  end
  if flag == 1 then
    added = added + 1
  elseif flag == 0 then
    dups = dups + 1
  end
  flags[#flags + 1] = flag
end
redis.call('HINCRBY', KEYS[3], 'enqueued', added)
redis.call('HINCRBY', KEYS[3], 'duplicates', dups)
redis.call('HSETNX', KEYS[3], 'created_ms', ARGV[3])
redis.call('HSETNX', KEYS[3], 'tenant', ARGV[6])
redis.call('ZADD', KEYS[4], 'NX', ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('PEXPIRE', KEYS[5], ARGV[5])
end
return flags
