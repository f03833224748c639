-- Record a job's final outcome exactly once: the done-set membership gates every aggregate update,
-- so a re-run after a crash (at-least-once delivery) never double-counts.
-- KEYS[1] result, KEYS[2] batch done set, KEYS[3] batch agg, KEYS[4] tenant agg, KEYS[5] batch dead hash
-- ARGV[1] job id, ARGV[2] result JSON, ARGV[3] result TTL s, ARGV[4] dead-letter JSON or '',
-- ARGV[5] retention ms for batch keys, ARGV[6..] pairs: agg field, integer increment (a field
-- starting with '@' goes to the batch aggregate only)
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
for i = 6, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
  if string.byte(ARGV[i]) ~= 64 then  -- '@': batch-only field (a per-minute series)
    redis.call('HINCRBY', KEYS[4], ARGV[i], ARGV[i + 1])
  end
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[5], ARGV[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[5], ARGV[5])
end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
return 1
