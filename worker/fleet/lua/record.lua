-- Record a job's final outcome exactly once: the done-set membership gates the aggregates, so a re-run
-- after a crash (at-least-once delivery) never double-counts.
-- The job's aggregate entry (agg_lib.lua) is either applied here (KEYS[6] absent) or, in a worker, left
-- in the process's pending hash KEYS[6]: the process applies its pending entries in one call every
-- ~100 ms (agg_flush.lua), and a dead process's are applied by the reaper (agg_fold). Either way each
-- entry is applied once, by whoever deletes it from the pending hash. The entry also gives the batch's done
-- set its TTL, so a busy process sets it once per flush instead of once per job.
-- KEYS[1] result, KEYS[2] batch done set, KEYS[3] batch agg, KEYS[4] tenant agg, KEYS[5] batch dead hash,
-- KEYS[6] the recording process's pending hash (optional), then with ARGV[7] = "finish" the arq job's
-- in-progress, retry and job keys, its queue and the owner's running set (the last five KEYS)
-- ARGV[1] job id, ARGV[2] result JSON, ARGV[3] result TTL s, ARGV[4] dead-letter JSON or '',
-- ARGV[5] retention ms for batch keys, ARGV[6] the job's aggregate entry, ARGV[7] "finish" or absent,
-- ARGV[8] with "finish": the arq job id
-- "finish": this run of the arq job ends here, recorded or a duplicate, so arq's own finish (a MULTI/EXEC
-- of the same deletions) is skipped, and the job never sits recorded yet still queued.
local pending = KEYS[6]
if ARGV[7] == 'finish' then
  local n = #KEYS
  redis.call('DEL', KEYS[n - 4], KEYS[n - 3], KEYS[n - 2])
  redis.call('ZREM', KEYS[n - 1], ARGV[8])
  redis.call('SREM', KEYS[n], ARGV[8])
  if n == 10 then pending = nil end
end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
if pending then
  redis.call('HSET', pending, ARGV[1], ARGV[6])
else
  agg_apply(ARGV[6], 1)
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[5], ARGV[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[5], ARGV[5])
end
return 1
