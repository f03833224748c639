-- Record a job's final outcome exactly once: the done-set membership gates the aggregates, so a re-run
-- after a crash (at-least-once delivery) never double-counts.
-- The job's aggregate entry (agg_lib.lua) is either applied here or, in a worker, left in the process's
-- pending hash: the process applies its pending entries in one call every ~100 ms (agg_flush.lua), and a
-- dead process's are applied by the reaper (agg_fold). Either way each entry is applied once, by whoever
-- deletes it from the pending hash. The entry also gives the batch's done set its TTL, so a busy process
-- sets it once per flush instead of once per job.
--
-- KEYS: 1 result, 2 batch done set, 3 batch agg, 4 tenant agg, 5 batch dead hash, then in this order,
--       each only when its ARGV says so: the recording process's pending hash (ARGV[7] ~= ''), the arq
--       run's in-progress, retry and job keys, its queue and the owner's running set (ARGV[8] ~= ''), the
--       job's calls hash (ARGV[9] ~= '').
-- ARGV: 1 job id, 2 result JSON, 3 result TTL s, 4 dead-letter JSON or '', 5 retention ms for batch keys,
--       6 the job's aggregate entry,
--       7 '' (no pending hash), 'later' (the entry goes to the pending hash) or 'now' (applied here; the
--         pending hash is given for the attempt's spend only),
--       8 the arq job id when this run of the arq job ends here, recorded or a duplicate, so arq's own
--         finish (a MULTI/EXEC of the same deletions) is skipped and the job never sits recorded yet
--         still queued; else '',
--       9 the job's last attempt n when its save rides here (what attempt_save.lua does, in the same
--         step), else ''; with it 10 the call's JSON, 11 the calls hash TTL s, 12 the spend's pending
--         member or '', 13 its entry.
-- Returns {1 recorded | 0 a duplicate, 1 if the attempt was saved here | 0}.
local k = 6
local pending = nil
if ARGV[7] ~= '' then
  pending = KEYS[k]
  k = k + 1
end
if ARGV[8] ~= '' then
  redis.call('DEL', KEYS[k], KEYS[k + 1], KEYS[k + 2])
  redis.call('ZREM', KEYS[k + 3], ARGV[8])
  redis.call('SREM', KEYS[k + 4], ARGV[8])
  k = k + 5
end
-- The paid answer is kept whether or not the record counts (a duplicate run's call was paid too).
local saved, spend = 0, nil
if ARGV[9] ~= '' and save_call(KEYS[k], ARGV[9], ARGV[10], ARGV[11]) then
  saved = 1
  if ARGV[12] ~= '' and pending then spend = ARGV[12] end
end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then
  if spend then redis.call('HSET', pending, spend, ARGV[13]) end
  return {0, saved}
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
if ARGV[7] == 'later' then
  -- one HSET for the job's entry and its call's spend
  if spend then
    redis.call('HSET', pending, ARGV[1], ARGV[6], spend, ARGV[13])
  else
    redis.call('HSET', pending, ARGV[1], ARGV[6])
  end
else
  agg_apply(ARGV[6], 1)
  if spend then redis.call('HSET', pending, spend, ARGV[13]) end
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[5], ARGV[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[5], ARGV[5])
end
return {1, saved}
